"""Process-wide infrastructure: strategies and threads, clusters, replicas, files,
TensorBoard, shared traces."""
