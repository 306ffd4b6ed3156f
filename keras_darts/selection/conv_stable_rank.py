"""Stable rank of matrices and of convolutions (docs/selection/stable_rank.md).

srank(A) = ||A||_F^2 / ||A||_2^2 = sum_i s_i^2 / max_i s_i^2.  A convolution is
scored as the linear map it applies to C_in x H x W inputs with periodic
boundary: its singular values are the union, over the H*W spatial frequencies,
of the singular values of the per-frequency channel matrix (Sedghi et al.
2019).  NumPy only; kernels are Keras HWIO arrays (depthwise: (k, k, C, 1)).
"""

import numpy as np


def _ratio(singular_values):
    """sum s^2 / max s^2; a zero map has no stable rank."""
    squares = np.square(np.asarray(singular_values, dtype=np.float64))
    peak = squares.max() if squares.size else 0.0
    if not peak > 0.0:
        raise ValueError("stable rank of a zero matrix/kernel is undefined (all singular "
                         "values are 0)")
    return float(squares.sum() / peak)


def stable_rank(matrix):
    """||A||_F^2 / ||A||_2^2 of a 2-D array; ValueError if A = 0
    (docs/selection/stable_rank.md#stable-rank-of-a-matrix)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"stable_rank needs a 2-D array, got shape {matrix.shape}")
    return _ratio(np.linalg.svd(matrix, compute_uv=False))


def _dilate(kernel, dilation):
    """Zero-expands a HW.. kernel: dilation-1 zeros between taps (k -> d*(k-1)+1)."""
    if dilation == 1:
        return kernel
    kh, kw = kernel.shape[:2]
    out = np.zeros((dilation * (kh - 1) + 1, dilation * (kw - 1) + 1) + kernel.shape[2:])
    out[::dilation, ::dilation] = kernel
    return out


def _on_torus(kernel, height, width):
    """The kernel's taps placed on the H x W torus.

    Zero padding to (H, W) when the kernel fits; taps beyond H or W wrap around
    (they hit the same input pixel under periodic boundary), so the FFT stays
    exact for small feature maps instead of truncating the kernel.
    """
    kh, kw = kernel.shape[:2]
    folded = np.zeros((height, width) + kernel.shape[2:])
    rows = np.arange(kh)[:, None] % height
    cols = np.arange(kw)[None, :] % width
    np.add.at(folded, (rows, cols), kernel)
    return folded


def _frequency_singular_values(matrices, depthwise):
    """Singular values of a batch of per-frequency [C_in, C_out] matrices.

    Depthwise: input channel c only reaches its own outputs, so the matrix is
    block-diagonal with 1 x multiplier blocks whose singular value is the row norm.
    """
    if depthwise:
        return np.sqrt(np.sum(np.abs(matrices) ** 2, axis=-1)).ravel()
    return np.linalg.svd(matrices, compute_uv=False).ravel()


def conv_singular_values(kernel, height, width, dilation=1, depthwise=False):
    """All H*W*min(C_in, C_out) singular values of a periodic convolution
    (docs/selection/stable_rank.md).

    kernel: HWIO array (depthwise: (k, k, C, multiplier)); dilated kernels are
    zero-expanded first.  The tap offset (cross-correlation vs convolution,
    centring) only changes the phase per frequency, not the singular values.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"expected an HWIO kernel, got shape {kernel.shape}")
    if kernel.shape[:2] == (1, 1):
        # A 1x1 kernel has the same channel matrix at every frequency.
        return np.tile(_frequency_singular_values(kernel[0], depthwise), height * width)
    kernel = _on_torus(_dilate(kernel, dilation), height, width)
    spectrum = np.fft.fft2(kernel, axes=(0, 1))  # [H, W, C_in, C_out]
    matrices = spectrum.reshape((height * width,) + kernel.shape[2:])
    return _frequency_singular_values(matrices, depthwise)


def conv_stable_rank(kernel, height, width, dilation=1, depthwise=False):
    """sum s^2 / max s^2 over `conv_singular_values` (docs/selection/stable_rank.md).

    For a 1x1 kernel this is H*W * stable_rank(kernel[0, 0]): the H*W scaling
    makes large feature maps dominate, as in the reference code.
    """
    return _ratio(conv_singular_values(kernel, height, width, dilation, depthwise))


def scored_kernel(op):
    """The kernel MSR-DARTS scores for a candidate op, or None (scores +inf).

    docs/selection/stable_rank.md#scored-kernel-per-op: the op's last conv, its final pointwise 1x1
    (SepConv/DilConv: the last Conv of `op.body.chain`).  Ops with no such conv
    (none, pools, identity, FactorizedReduce skip, ...) get None.  Returns the
    Keras variable itself; `np.asarray` turns it into an array.
    """
    chain = getattr(getattr(op, "body", None), "chain", None)
    if not chain:
        return None
    convs = [layer for layer in chain if hasattr(layer, "kernel") and hasattr(layer, "depthwise")]
    if not convs:
        return None
    last = convs[-1]
    if last.kernel_size != 1 or last.depthwise:
        return None
    return last.kernel
