"""Export for serving (SavedModel) and reuse of an exported module in Keras models."""
