"""grid_sample and affine_grid: a per-point numpy reference, identity and shift grids,
finite differences in float64, then PyTorch for every mode x padding x align_corners."""

import itertools

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain.autograd import gradcheck

MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]
COMBINATIONS = list(itertools.product(MODES, PADDINGS, [True, False]))


def leaf(array) -> dt.Tensor:
    return dt.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


def sample_grid(rng, n, h, w, spread=1.6):
    """Grid points inside, beyond, on the edges (±1) and on pixel centres of a 4x5 input."""
    grid = rng.uniform(-spread, spread, (n, h, w, 2))
    grid[0, 0, :4] = [[-1, -1], [1, 1], [-1, 1], [1, -1]]
    grid[0, 1, :4] = [[-1, 0.3], [1, -0.2], [0.5, 1.0], [-0.5, -1.0]]  # one coordinate on an edge
    grid[0, 2, :3] = [[-1 / 3, 0.5], [0.6, 1 / 3], [-0.2, -0.5]]  # pixel centres (both aligns)
    grid[-1, 0, :2] = [[0.25, 0.0], [-0.75, 0.0]]  # halfway between pixels (align_corners=True)
    return grid


# ---- a torch-free reference: one point at a time ------------------------------------------
def reference(x, grid, mode, padding, align):
    """Direct per-point evaluation; reflection by repeated mirroring, not by fmod."""
    n, c, h, w = x.shape
    out = np.zeros((n, c) + grid.shape[1:3])

    def source(coord, size):
        pos = (coord + 1) / 2 * (size - 1) if align else ((coord + 1) * size - 1) / 2
        if padding == "reflection":
            low, high = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
            while size > 1 and not low <= pos <= high:
                pos = 2 * low - pos if pos < low else 2 * high - pos
            pos = 0.0 if size == 1 and align else pos
        if padding in ("border", "reflection"):
            pos = min(max(pos, 0.0), size - 1.0)
        return pos

    def pixel(b, yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return x[b, :, yy, xx]
        return np.zeros(c)

    for b, i, j in np.ndindex(n, *grid.shape[1:3]):
        px, py = source(grid[b, i, j, 0], w), source(grid[b, i, j, 1], h)
        if mode == "nearest":
            out[b, :, i, j] = pixel(b, int(np.rint(py)), int(np.rint(px)))
            continue
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        fx, fy = px - x0, py - y0
        out[b, :, i, j] = (
            pixel(b, y0, x0) * (1 - fx) * (1 - fy)
            + pixel(b, y0, x0 + 1) * fx * (1 - fy)
            + pixel(b, y0 + 1, x0) * (1 - fx) * fy
            + pixel(b, y0 + 1, x0 + 1) * fx * fy
        )
    return out


@pytest.mark.parametrize("mode,padding,align", list(itertools.product(MODES[:2], PADDINGS, [1, 0])))
def test_matches_the_per_point_reference(rng, mode, padding, align):
    x = rng.standard_normal((2, 3, 4, 5))
    grid = sample_grid(rng, 2, 3, 6, spread=3.5)  # far enough to reflect more than once
    got = F.grid_sample(leaf(x), leaf(grid), mode, padding, bool(align))
    expected = reference(x, grid, mode, padding, bool(align))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
def test_identity_affine_grid_reproduces_the_input(rng, mode, padding, align):
    x = rng.standard_normal((2, 3, 4, 5))
    theta = np.tile([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], (2, 1, 1))
    grid = F.affine_grid(dt.tensor(theta), (2, 3, 4, 5), align_corners=align)
    got = F.grid_sample(dt.tensor(x), grid, mode, padding, align)
    np.testing.assert_allclose(got.numpy(), x, atol=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_a_one_pixel_shift(rng, padding):
    x = rng.standard_normal((1, 2, 3, 4))
    theta = np.array([[[1.0, 0.0, 2 / 3], [0.0, 1.0, 0.0]]])  # +1 pixel in x (align_corners)
    grid = F.affine_grid(dt.tensor(theta), (1, 2, 3, 4), align_corners=True)
    got = F.grid_sample(dt.tensor(x), grid, padding_mode=padding, align_corners=True).numpy()
    np.testing.assert_allclose(got[..., :3], x[..., 1:], atol=1e-12)
    last = {"zeros": 0.0, "border": x[..., 3], "reflection": x[..., 2]}[padding]
    np.testing.assert_allclose(got[..., 3], np.broadcast_to(last, got[..., 3].shape), atol=1e-12)


def test_default_align_corners_is_false(rng):
    x, grid = rng.standard_normal((1, 1, 4, 5)), sample_grid(rng, 1, 3, 4)
    default = F.grid_sample(dt.tensor(x), dt.tensor(grid)).numpy()
    explicit = F.grid_sample(dt.tensor(x), dt.tensor(grid), align_corners=False).numpy()
    np.testing.assert_array_equal(default, explicit)
    np.testing.assert_allclose(default, reference(x, grid, "bilinear", "zeros", False), atol=1e-12)
    theta = dt.tensor(rng.standard_normal((1, 2, 3)))
    np.testing.assert_array_equal(
        F.affine_grid(theta, (1, 1, 4, 5)).numpy(),
        F.affine_grid(theta, (1, 1, 4, 5), align_corners=False).numpy(),
    )


def test_affine_grid_base_coordinates():
    theta = dt.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dt.float64)
    grid = F.affine_grid(theta, (1, 1, 2, 4), align_corners=False).numpy()
    np.testing.assert_allclose(grid[0, 0, :, 0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(grid[0, :, 0, 1], [-0.5, 0.5])
    grid = F.affine_grid(theta, (1, 1, 2, 3), align_corners=True).numpy()
    np.testing.assert_allclose(grid[0, 1], [[-1, 1], [0, 1], [1, 1]])


# ---- gradients: finite differences ---------------------------------------------------------
@pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
def test_gradients_match_finite_differences(rng, mode, padding, align):
    x = rng.standard_normal((2, 2, 3, 4))
    grid = rng.uniform(-1.4, 1.4, (2, 3, 2, 2))  # random points: off the kinks

    def fn(a, g):
        return F.grid_sample(a, g, mode, padding, align)

    assert gradcheck(fn, [leaf(x), leaf(grid)])


def test_nearest_has_a_zero_grid_gradient(rng):
    grid = leaf(rng.uniform(-1, 1, (1, 2, 3, 2)))
    F.grid_sample(leaf(rng.standard_normal((1, 2, 3, 3))), grid, "nearest").sum().backward()
    np.testing.assert_array_equal(grid.grad.numpy(), np.zeros((1, 2, 3, 2)))


@pytest.mark.parametrize("padding", ["border", "reflection"])
def test_grid_gradient_on_and_beyond_the_edges(padding):
    # PyTorch's convention: clamping's derivative is 0 on the edge itself (and, for border,
    # beyond it); reflection mirrors a point beyond the edge, and its gradient with it.
    x = leaf(np.arange(9.0).reshape(1, 1, 3, 3) ** 2)
    grid = leaf([[[[1.0, 0.2], [0.2, -1.0], [1.7, -0.3], [0.3, -0.3]]]])
    F.grid_sample(x, grid, padding_mode=padding, align_corners=True).sum().backward()
    got = grid.grad.numpy()[0, 0]
    assert got[0, 0] == 0.0 and got[1, 1] == 0.0
    assert got[0, 1] != 0 and got[1, 0] != 0  # the coordinates inside still move
    if padding == "border":
        assert got[2, 0] == 0.0
    else:  # x = 1.7 reads what x = 0.3 reads; moving right moves its source left
        np.testing.assert_allclose(got[2], got[3] * [-1, 1], rtol=1e-12)
        assert got[3, 0] != 0


def test_input_gradient_sums_points_that_read_one_pixel():
    x = leaf(np.arange(4.0).reshape(1, 1, 2, 2))
    grid = leaf(np.zeros((1, 3, 1, 2)))  # three reads of the centre: 1/4 of each pixel each
    F.grid_sample(x, grid, align_corners=True).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((1, 1, 2, 2), 0.75))
    # d/dx of the centre value: (x[0,1] - x[0,0] + x[1,1] - x[1,0]) / 2 * (W - 1) / 2, per read
    np.testing.assert_allclose(grid.grad.numpy()[0, :, 0], [[0.5, 1.0]] * 3)


def test_gradients_5d_and_affine_grid(rng):
    x, grid = rng.standard_normal((1, 2, 2, 3, 3)), rng.uniform(-1.3, 1.3, (1, 2, 2, 1, 3))
    for padding in PADDINGS:
        assert gradcheck(
            lambda a, g, p=padding: F.grid_sample(a, g, padding_mode=p), [leaf(x), leaf(grid)]
        )
    theta = rng.standard_normal((2, 2, 3))
    assert gradcheck(lambda t: F.affine_grid(t, (2, 1, 3, 4)), [leaf(theta)])
    theta = rng.standard_normal((1, 3, 4))
    assert gradcheck(lambda t: F.affine_grid(t, (1, 1, 2, 3, 2), True), [leaf(theta)])


def test_errors_name_the_fix():
    x, grid = dt.zeros(1, 1, 3, 3), dt.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="mode='area'"):
        F.grid_sample(x, grid, mode="area")
    with pytest.raises(ValueError, match="padding_mode='circular'"):
        F.grid_sample(x, grid, padding_mode="circular")
    with pytest.raises(ValueError, match="4-D input"):
        F.grid_sample(dt.zeros(1, 3, 3), dt.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, H_out, W_out, 2\)"):
        F.grid_sample(x, dt.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="with N = 1"):
        F.grid_sample(x, dt.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="bicubic"):
        F.grid_sample(dt.zeros(1, 1, 2, 2, 2), dt.zeros(1, 1, 1, 1, 3), mode="bicubic")
    with pytest.raises(TypeError, match="same dtype"):
        F.grid_sample(x, grid.double())
    with pytest.raises(TypeError, match="floating point"):
        F.grid_sample(dt.zeros(1, 1, 3, 3, dtype=dt.int64), grid)
    with pytest.raises(ValueError, match="theta must have shape"):
        F.affine_grid(dt.zeros(1, 2, 3), (2, 1, 3, 3))
    with pytest.raises(ValueError, match="positive sizes"):
        F.affine_grid(dt.zeros(1, 2, 3), (1, 1, 0, 3))


# ---- non-finite values, empty batches, large images --------------------------------------
@pytest.mark.parametrize("mode,align", list(itertools.product(MODES, [True, False])))
def test_an_inf_pixel_reaches_only_the_points_that_read_it(mode, align):
    # An out-of-bounds tap (zeros padding) must not read pixel (0, 0): inf there times a
    # zero mask would be NaN. Every point here reads columns >= 1 only (bicubic included).
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    grid = np.array([[[[0.9, 0.9], [3.0, 3.0], [0.4, 0.2], [1.2, -0.5], [0.6, -1.3]]]])
    results = []
    for corner in (0.0, np.inf):
        x[0, 0, 0, 0] = corner
        a, g = leaf(x), leaf(grid)
        out = F.grid_sample(a, g, mode, "zeros", align)
        out.sum().backward()
        results.append([out.detach().numpy(), g.grad.numpy(), a.grad.numpy()])
    for finite, with_inf in zip(*results):
        assert np.isfinite(with_inf).all()
        np.testing.assert_array_equal(with_inf, finite)
    if mode != "bicubic":
        expected = reference(x, grid, mode, "zeros", align)
        np.testing.assert_allclose(results[1][0], expected, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf in the weights
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_grid_point_leaves_the_input_gradient_alone(mode, bad):
    # The point's taps are all out of bounds: nothing of it may be added to a pixel, even
    # with a NaN weight. Its own output is NaN as in PyTorch (0 for nearest, which has no
    # weights).
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    grid = np.array([[[[bad, 0.0], [0.2, 0.3]], [[0.0, bad], [-0.4, 0.1]]]])
    keep = np.array([[[[0.0, 1.0], [0.0, 1.0]]]])  # the loss ignores the non-finite points
    grads = []
    for g in (grid, np.where(np.isfinite(grid), grid, 0.0)):
        a = leaf(x)
        out = F.grid_sample(a, leaf(g), mode, "zeros", False)
        (out * dt.tensor(keep)).sum().backward()
        grads.append(a.grad.numpy())
    assert np.isfinite(grads[0]).all()
    np.testing.assert_array_equal(grads[0], grads[1])
    out = F.grid_sample(dt.tensor(x), dt.tensor(grid), mode, "zeros", False).numpy()
    expected = 0.0 if mode == "nearest" else np.nan
    np.testing.assert_array_equal(out[0, 0, :, 0], [expected, expected])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(0, 3, 5, 7), (2, 0, 5, 7)])
def test_an_empty_batch_or_no_channels(mode, shape):
    x, grid = leaf(np.zeros(shape)), leaf(np.ones((shape[0], 4, 6, 2)))
    out = F.grid_sample(x, grid, mode, align_corners=False)
    assert out.shape == (shape[0], shape[1], 4, 6)
    out.sum().backward()
    assert x.grad.shape == shape and grid.grad.shape == grid.shape
    assert not grid.grad.numpy().any()
    five = F.grid_sample(dt.zeros(0, 2, 3, 4, 5), dt.zeros(0, 1, 2, 3, 3))
    assert five.shape == (0, 2, 1, 2, 3)


def reference_input_gradient(shape, grid, direction, align):
    """d sum(direction * grid_sample(x, grid)) / dx for bilinear, zeros: tap by tap."""
    h, w = shape[2:]
    out = np.zeros(shape)
    for b, i, j in np.ndindex(*grid.shape[:3]):
        px = (grid[b, i, j, 0] + 1) / 2 * (w - 1) if align else ((grid[b, i, j, 0] + 1) * w - 1) / 2
        py = (grid[b, i, j, 1] + 1) / 2 * (h - 1) if align else ((grid[b, i, j, 1] + 1) * h - 1) / 2
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        for yy, xx in itertools.product((y0, y0 + 1), (x0, x0 + 1)):
            if 0 <= yy < h and 0 <= xx < w:
                weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                out[b, :, yy, xx] += weight * direction[b, :, i, j]
    return out


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 3, 260, 256)])  # small / large planes
def test_input_gradient_matches_a_tap_by_tap_reference(rng, shape):
    # The CPU sums channels a few at a time for small images, one at a time for large ones.
    grid = rng.uniform(-1.2, 1.2, (shape[0], 4, 5, 2))
    grid[:, 0] = grid[:, 1]  # points on the same pixels: repeated positions to sum
    direction = rng.standard_normal((shape[0], shape[1], 4, 5))
    for align in (True, False):
        x = leaf(rng.standard_normal(shape))
        (
            F.grid_sample(x, dt.tensor(grid), align_corners=align) * dt.tensor(direction)
        ).sum().backward()
        expected = reference_input_gradient(shape, grid, direction, align)
        np.testing.assert_allclose(x.grad.numpy(), expected, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_non_finite_values_match_torch(torch):
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    x[0, 0, 0, 0] = np.inf
    grid = np.array([[[[0.9, 0.9], [3.0, 3.0], [0.2, 0.3], [np.nan, 0.0], [0.1, np.inf]]]])
    for mode, align in itertools.product(MODES, [True, False]):
        values, grads = run_both(
            torch,
            lambda a, g, m=mode, al=align: F.grid_sample(a, g, m, "zeros", al),
            lambda a, g, m=mode, al=align: torch.nn.functional.grid_sample(a, g, m, "zeros", al),
            [x, grid.astype(np.float32)],
        )
        np.testing.assert_allclose(*values, rtol=1e-6, equal_nan=True)
        for ours, theirs in grads:
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True)
    x[0, 0, 0, 0] = 1.0  # the input gradient of pixels no finite point reads stays 0
    values, grads = run_both(
        torch,
        lambda a, g: F.grid_sample(a, g, align_corners=False)[..., 2:3],
        lambda a, g: torch.nn.functional.grid_sample(a, g, align_corners=False)[..., 2:3],
        [x, grid.astype(np.float32)],
    )
    np.testing.assert_allclose(*grads[0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 3, 5, 7), (2, 0, 5, 7)])
def test_empty_matches_torch(torch, shape):
    values, grads = run_both(
        torch,
        lambda a, g: F.grid_sample(a, g, align_corners=False),
        lambda a, g: torch.nn.functional.grid_sample(a, g, align_corners=False),
        [np.zeros(shape), np.ones((shape[0], 4, 6, 2))],
    )
    assert values[0].shape == values[1].shape
    for ours, theirs in grads:
        np.testing.assert_array_equal(ours, theirs)


# ---- the test device (cupy paths; deterministic scatter) -----------------------------------
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", ["reflection", "zeros"])
def test_on_the_test_device(test_device, rng, mode, deterministic, padding):
    x, grid = rng.standard_normal((2, 3, 4, 5)), sample_grid(rng, 2, 6, 7)
    grid[1, :2] = 0.1  # many points reading the same pixels: a scatter with repeats
    on_cpu = [leaf(x), leaf(grid)]
    on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in (x, grid)]
    expected = F.grid_sample(*on_cpu, mode=mode, padding_mode=padding)
    dt.use_deterministic_algorithms(deterministic)
    try:
        got = F.grid_sample(*on_device, mode=mode, padding_mode=padding)
        got.sum().backward()
    finally:
        dt.use_deterministic_algorithms(False)
    assert got.device.type == test_device
    np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy(), atol=1e-12)
    expected.sum().backward()
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_and_empty_on_the_test_device(test_device, rng, mode):
    x, grid = rng.standard_normal((2, 3, 4, 5)), sample_grid(rng, 2, 3, 4)
    x[0, :, 0, 0], grid[0, 0, 0], grid[1, 1, 1, 1] = np.inf, np.nan, -np.inf
    for shapes in ((x, grid), (x[:0], grid[:0]), (x[:, :0], grid)):
        on_cpu = [leaf(a) for a in shapes]
        on_device = [dt.tensor(a, requires_grad=True, device=test_device) for a in shapes]
        expected, got = (F.grid_sample(*args, mode=mode) for args in (on_cpu, on_device))
        direction = rng.standard_normal(tuple(got.shape))
        (got * dt.tensor(direction, device=test_device)).sum().backward()
        (expected * dt.tensor(direction)).sum().backward()
        np.testing.assert_allclose(got.detach().cpu().numpy(), expected.detach().numpy())
        for a, b in zip(on_device, on_cpu):
            np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), atol=1e-10)


# ---- PyTorch -------------------------------------------------------------------------------
def run_both(torch, fn_ours, fn_theirs, arrays, seed=0):
    """Values and the gradients of every input under a random projection, ours and PyTorch's."""
    ours = [dt.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_ours, out_theirs = fn_ours(*ours), fn_theirs(*theirs)
    direction = np.random.default_rng(seed).standard_normal(tuple(out_theirs.shape))
    direction = direction.astype(arrays[0].dtype)
    (out_ours * dt.tensor(direction)).sum().backward()
    (out_theirs * torch.tensor(direction)).sum().backward()
    values = (out_ours.detach().numpy(), out_theirs.detach().numpy())
    grads = [(a.grad.numpy(), b.grad.numpy()) for a, b in zip(ours, theirs)]
    return values, grads


@pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
def test_matches_torch(torch, rng, mode, padding, align):
    x, grid = rng.standard_normal((2, 3, 4, 5)), sample_grid(rng, 2, 6, 7, spread=2.5)
    values, grads = run_both(
        torch,
        lambda a, g: F.grid_sample(a, g, mode, padding, align),
        lambda a, g: torch.nn.functional.grid_sample(a, g, mode, padding, align),
        [x, grid],
    )
    np.testing.assert_allclose(*values, atol=1e-12)
    for ours, theirs in grads:
        np.testing.assert_allclose(ours, theirs, atol=1e-11)


@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_in_float32(torch, rng, mode):
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    grid = sample_grid(rng, 2, 5, 6).astype(np.float32)
    values, grads = run_both(
        torch,
        lambda a, g: F.grid_sample(a, g, mode, "border"),
        lambda a, g: torch.nn.functional.grid_sample(a, g, mode, "border", False),
        [x, grid],
    )
    assert values[0].dtype == np.float32
    np.testing.assert_allclose(*values, atol=1e-5)
    for ours, theirs in grads:
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode,padding,align", list(itertools.product(MODES[:2], PADDINGS, [1, 0])))
def test_5d_matches_torch(torch, rng, mode, padding, align):
    x, grid = rng.standard_normal((2, 2, 3, 4, 5)), rng.uniform(-1.5, 1.5, (2, 3, 2, 4, 3))
    grid[0, 0, 0, :2] = [[-1, 1, -1], [1, 1, 1]]
    values, grads = run_both(
        torch,
        lambda a, g: F.grid_sample(a, g, mode, padding, bool(align)),
        lambda a, g: torch.nn.functional.grid_sample(a, g, mode, padding, bool(align)),
        [x, grid],
    )
    np.testing.assert_allclose(*values, atol=1e-12)
    for ours, theirs in grads:
        np.testing.assert_allclose(ours, theirs, atol=1e-11)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")  # a unit-size grid
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 1, 3), (2, 3, 2, 4, 3)])
@pytest.mark.parametrize("align", [True, False])
def test_affine_grid_matches_torch(torch, rng, size, align):
    spatial = len(size) - 2
    theta = rng.standard_normal((2, spatial, spatial + 1))
    values, grads = run_both(
        torch,
        lambda t: F.affine_grid(t, size, align),
        lambda t: torch.nn.functional.affine_grid(t, size, align),
        [theta],
    )
    np.testing.assert_allclose(*values, atol=1e-12)
    np.testing.assert_allclose(*grads[0], atol=1e-11)
