"""Pure functions behind the drift detectors, each with its source.

- Random Fourier features: Rahimi & Recht, "Random Features for Large-Scale Kernel Machines",
  NIPS 2007. For the Gaussian kernel k(x, y) = exp(-‖x − y‖² / (2σ²)),
  φ(x) = √(2/D) cos(Wx + b) with W ~ N(0, σ⁻² I) and b ~ U[0, 2π) gives E[φ(x)·φ(y)] = k(x, y).
- MMD with random features: Gretton et al., "A Kernel Two-Sample Test", JMLR 13 (2012); with
  the kernel replaced by its RFF approximation the squared MMD is ‖mean φ(X) − mean φ(Y)‖²
  (Zhao & Meng, "FastMMD", Neural Computation 2015; Chwialkowski et al., NIPS 2015).
- Null distribution: under H0, √(nm/(n+m)) (mean_cur − mean_ref) → N(0, Σ) by the
  multivariate CLT (Σ = Cov φ(X)), so T = nm/(n+m) ‖mean_cur − mean_ref‖² → Σᵢ λᵢ χ²₁ with λᵢ
  the eigenvalues of Σ. Its tail is computed with Imhof, "Computing the distribution of
  quadratic forms in normal variables", Biometrika 48 (1961), eq. 3.2. The plain two-moment
  (Satterthwaite) fit is lighter-tailed than the true law whenever the λᵢ differ, so it
  over-alerts at α = 10⁻³; Imhof does not.
- Whitened (regularised) statistic: T_w = nm/(n+m) ‖(Σ + γI)^(-½) Δ‖², the kernel Fisher
  discriminant test of Harchaoui, Bach & Moulines, "Testing for homogeneity with kernel Fisher
  discriminant analysis", NIPS 2007, with the random features as the kernel's finite basis.
  Its null law is Σᵢ μᵢ χ²₁ with μᵢ the eigenvalues of (Σ + γI)^(-½) Σ (Σ + γI)^(-½). The
  whitening is estimated on one half of the reference sample and μ on the other (cross-fitting):
  with both from the same rows, the smallest eigenvalues of Σ come out too small, their
  directions get too much weight, and the null law is too light (quiet windows alerted at
  3–7 times the nominal rate in simulation); cross-fitted, the law errs on the heavy side.
- Categorical test: Pearson's chi-square on the 2×K table, pooling cells whose expected count
  is below 5 (Cochran, "Some methods for strengthening the common χ² tests", Biometrics 1954).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import _ks as ks
from detectors import _special

FloatArray = npt.NDArray[np.float64]


#: fixed-point scale of a feature value in a mergeable sum: integer sums add exactly, so a
#: window's state does not depend on the order its partial states were merged in. 2⁻²⁴ is the
#: resolution of a float32 in [0.5, 1), so nothing is lost that the features carried.
FIXED_POINT_SCALE = float(2**24)

#: below Σw + this × max w, the Chernoff bound cannot be under 10⁻⁶ (2 ln 10⁶ = 27.63, less a
#: margin for rounding)
CHERNOFF_SKIP = 27.0

#: Gauss–Legendre panels per period of the oscillating factor in Imhof's integrand
PANELS_PER_PERIOD = 1.0


@dataclass(frozen=True)
class RandomFeatures:
    """W (D × d) and b (D) of a random Fourier feature map; the same seed gives the same map.

    W is stored as integers (in float32) times 2^-weight_exponent, and inputs are rounded to
    multiples of 2^-input_exponent, with exponents chosen so that every partial sum of W·x is
    an integer below 2²⁴ in those units. float32 BLAS then computes W·x exactly, so a row's
    features do not depend on which other rows share its batch (BLAS blocking otherwise
    changes the last bits, and merged states would differ from a one-pass state).
    """

    weights: npt.NDArray[np.float32]  # integer-valued
    offsets: npt.NDArray[np.float32]
    weight_exponent: int
    input_exponent: int
    #: Wᵀ laid out contiguously (d × D): BLAS multiplies a few rows by it 1.4-2.8× faster than
    #: by the transposed view (10-30 rows a batch: 2.9 → 1.0 µs a row), with the same, exact,
    #: products
    weights_t: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights_t", np.ascontiguousarray(self.weights.T))

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.weights.shape[1])


#: bits kept of each weight of W (relative to the kernel scale)
WEIGHT_BITS = 8


def random_features(dimension: int, n_features: int, bandwidth: float, seed: int) -> RandomFeatures:
    """The RFF map of a Gaussian kernel of width `bandwidth` (Rahimi & Recht 2007)."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n_features, dimension)) / bandwidth
    offsets = rng.uniform(0.0, 2.0 * math.pi, n_features)
    weight_exponent = WEIGHT_BITS - math.ceil(math.log2(1.0 / bandwidth))
    weights = np.rint(np.ldexp(raw, weight_exponent))
    # |Σ q_w q_x| ≤ ‖q_w‖ ‖q_x‖ (Cauchy–Schwarz) and ‖q_x‖ ≤ 2^e + √d/2 for a unit row
    max_norm = float(np.sqrt((weights**2).sum(axis=1)).max())
    input_exponent = math.floor(math.log2(2.0**24 / max_norm - math.sqrt(dimension) / 2 - 1))
    if input_exponent < 6:
        msg = (
            f"random features with bandwidth {bandwidth} in dimension {dimension} leave "
            f"only {input_exponent} bits for the inputs; use a larger bandwidth"
        )
        raise ValueError(msg)
    return RandomFeatures(
        weights.astype(np.float32), offsets.astype(np.float32), weight_exponent, input_exponent
    )


def unit_rows_on_grid(
    x: npt.NDArray[np.floating[Any]], norms: npt.NDArray[np.floating[Any]], rf: RandomFeatures
) -> npt.NDArray[np.float32]:
    """Rows scaled to unit norm and rounded to the input grid, as integers in float32."""
    scale = (np.ldexp(1.0, rf.input_exponent) / np.asarray(norms, np.float64)).astype(np.float32)
    grid: npt.NDArray[np.float32] = np.asarray(x, dtype=np.float32) * scale[:, None]
    np.rint(grid, out=grid)
    return grid


def grid_to_unit(grid: npt.NDArray[np.float32], rf: RandomFeatures) -> npt.NDArray[np.float32]:
    """Grid integers back to the (unit-norm, rounded) vectors they stand for."""
    out: npt.NDArray[np.float32] = grid * np.float32(np.ldexp(1.0, -rf.input_exponent))
    return out


def grid_cosine_features(
    grid: npt.NDArray[np.float32], rf: RandomFeatures
) -> npt.NDArray[np.float32]:
    """cos(Wx + b) per row for rows already on the input grid; in [-1, 1]."""
    projected: npt.NDArray[np.float32] = grid @ rf.weights_t  # exact, see RandomFeatures
    projected *= np.float32(np.ldexp(1.0, -(rf.weight_exponent + rf.input_exponent)))
    projected += rf.offsets
    np.cos(projected, out=projected)
    return projected


def cosine_features(
    x: npt.NDArray[np.floating[Any]], rf: RandomFeatures
) -> npt.NDArray[np.float32]:
    """cos(Wx + b) per row of unit vectors (e.g. a stored sample); √(2/D) times it is φ(x)."""
    grid: npt.NDArray[np.float32] = np.asarray(x, dtype=np.float32) * np.float32(
        np.ldexp(1.0, rf.input_exponent)
    )
    np.rint(grid, out=grid)
    return grid_cosine_features(grid, rf)


def fixed_point_sum(cos_features: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Column sums of cos features as exact integers (2⁻²⁴ resolution per value).

    Overwrites its argument (it is a scratch array on the hot path). Each rounded value is an
    integer below 2²⁴ in magnitude, so float64 sums stay exact up to 2²⁹ rows.
    """
    cos_features *= np.float32(FIXED_POINT_SCALE)
    np.rint(cos_features, out=cos_features)
    sums: npt.NDArray[np.float64] = cos_features.sum(axis=0, dtype=np.float64)
    return sums.astype(np.int64)


def feature_mean(fixed_sum: npt.NDArray[np.int64], count: int, n_features: int) -> FloatArray:
    """mean φ(x) of the rows behind a fixed-point sum of cos features."""
    scale = math.sqrt(2.0 / n_features) / (FIXED_POINT_SCALE * count)
    return fixed_sum.astype(np.float64) * scale


def feature_covariance_eigenvalues(cos_features: npt.NDArray[np.float32]) -> FloatArray:
    """Eigenvalues of the sample covariance of φ(x), largest first, negatives clipped to 0."""
    phi = cos_features.astype(np.float64) * math.sqrt(2.0 / cos_features.shape[1])
    centred = phi - phi.mean(axis=0)
    cov = centred.T @ centred / max(len(phi) - 1, 1)
    eig = np.linalg.eigvalsh(cov)[::-1]
    return np.clip(eig, 0.0, None)


#: ridge γ added to the reference feature covariance before whitening, as a share of its mean
#: eigenvalue (scale-free, so it holds for any bandwidth or feature count)
WHITENING_RIDGE = 0.25


@dataclass(frozen=True, eq=False)
class Whitening:
    """The map of a feature-mean difference to whitened coordinates, and the null law there.

    `matrix` (D × D): whitened difference = difference @ matrix; `null_eigenvalues`: the μᵢ of
    the whitened statistic's null law Σ μᵢ χ²₁, largest first."""

    matrix: FloatArray
    null_eigenvalues: FloatArray


def whitening(cos_features: npt.NDArray[np.float32], ridge: float = WHITENING_RIDGE) -> Whitening:
    """Cross-fitted regularised whitening of φ(x) from a reference sample's cos features.

    Rows alternate between the half the whitening is estimated on and the half its null law
    is estimated on (a bottom-k sample's rows are in hash order, so that is a random split).
    With fewer than 4 rows, or a degenerate sample, the map is the identity (the plain
    RFF-MMD statistic) and the null law that of `feature_covariance_eigenvalues`.
    """
    n_features = cos_features.shape[1]
    phi = cos_features.astype(np.float64) * math.sqrt(2.0 / n_features)
    if len(phi) >= 4:
        fit, check = phi[0::2], phi[1::2]
        lam, vectors = np.linalg.eigh(np.cov(fit, rowvar=False))
        lam = np.clip(lam, 0.0, None)
        floor = ridge * float(lam.mean())
        if floor > 0:
            matrix = vectors / np.sqrt(lam + floor)[None, :]
            null = np.linalg.eigvalsh(matrix.T @ np.cov(check, rowvar=False) @ matrix)[::-1]
            return Whitening(matrix, np.clip(null, 0.0, None))
    return Whitening(np.eye(n_features), feature_covariance_eigenvalues(cos_features))


def weighted_chi2_sf(x: float, weights: FloatArray, nodes_per_panel: int = 24) -> float:
    """P(Σᵢ wᵢ Zᵢ² > x) for iid standard normal Zᵢ and wᵢ ≥ 0 (Imhof 1961, eq. 3.2).

    P = ½ + (1/π) ∫₀^∞ sin θ(u) / (u ρ(u)) du with θ(u) = ½ Σ arctan(wᵢu) − ½xu and
    ρ(u) = Π (1 + wᵢ²u²)^¼. The integrand is smooth, so it is integrated with composite
    Gauss–Legendre on [0, U], vectorised over all nodes at once; U is where u·ρ(u) exceeds
    10⁹ (the rest of the integral is below 10⁻⁹), and the panels are short enough to follow
    the oscillation of −½xu. Weights below 10⁻⁹ of the total are dropped. Far in the tail,
    where the Chernoff bound is already below 10⁻⁶, that bound is returned instead (an upper
    bound on the p-value, which keeps a verdict correct and the integration short).
    """
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if total <= 0.0:
        return 0.0 if x > 0 else 1.0
    if x <= 0.0:
        return 1.0
    w = w[w > total * 1e-9]
    # −log(1 − 2tw) ≥ 2tw makes every bound on the grid at least e^(−(x − Σw)/(2 max w)), so
    # it can only fall below 10⁻⁶ (ln 10⁶ < 13.82) when x > Σw + 27.6 max w: skip it otherwise
    # (a quarter of the time of a typical call, same result)
    if x > float(w.sum()) + CHERNOFF_SKIP * float(w.max()):
        bound = chernoff_sf_bound(x, w)
        if bound < 1e-6:
            return bound

    return float(_imhof(np.array([x]), w, nodes_per_panel)[0])


def _imhof(xs: FloatArray, w: FloatArray, nodes_per_panel: int = 24) -> FloatArray:
    """Imhof's integral (see `weighted_chi2_sf`) at every x > 0 of `xs` at once: the nodes,
    and the weights' part of the integrand, are shared; the panels follow the largest x.
    The x are taken in chunks of at most `_IMHOF_CELLS` (x, node) pairs, so memory stays
    bounded whatever the node count."""
    u, quad_w = _imhof_nodes(float(xs.max()), w, nodes_per_panel)
    wu = np.outer(u, w)
    arctans = 0.5 * np.arctan(wu).sum(axis=1)
    log_rho = 0.25 * np.log1p(wu * wu).sum(axis=1)
    del wu
    scale = quad_w / (u * np.exp(log_rho))
    rows = max(1, _IMHOF_CELLS // len(u))
    integral = np.empty(len(xs))
    for start in range(0, len(xs), rows):
        chunk = xs[start : start + rows]
        theta = arctans[None, :] - 0.5 * chunk[:, None] * u[None, :]
        integral[start : start + rows] = np.sin(theta) @ scale
    sf: FloatArray = np.clip(0.5 + integral / math.pi, 0.0, 1.0)
    return sf


#: (x, node) pairs `_imhof` evaluates at once: 2M doubles, 16 MB per temporary
_IMHOF_CELLS = 1 << 21


def _imhof_nodes(
    x_max: float, w: FloatArray, nodes_per_panel: int
) -> tuple[FloatArray, FloatArray]:
    """Gauss–Legendre nodes and weights on [0, upper], the panels following the largest x."""
    upper, n_panels = _imhof_panels(x_max, w)
    gl_nodes, gl_weights = gauss_legendre(nodes_per_panel)
    edges = np.linspace(0.0, upper, n_panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    mid = 0.5 * (edges[1:] + edges[:-1])
    u = (mid[:, None] + half[:, None] * gl_nodes[None, :]).ravel()
    quad_w = (half[:, None] * gl_weights[None, :]).ravel()
    return u, quad_w


def _imhof_panels(x_max: float, w: FloatArray) -> tuple[float, int]:
    """Where the integrand is negligible, and how many panels reach it: one per period of
    sin(½xu), at least 8. A null law of one or two weights decays slowly (the end reaches
    ~10⁶), so the count can run into hundreds of thousands."""

    def log_u_rho(u: float) -> float:
        return math.log(u) + 0.25 * float(np.sum(np.log1p((w * u) ** 2)))

    upper = 1.0 / float(w.max())
    while log_u_rho(upper) < math.log(1e9):
        upper *= 2.0
    return upper, max(8, math.ceil(upper * x_max / (4.0 * math.pi) * PANELS_PER_PERIOD))


#: p-values at or above this come from a table per null law (`null_sf`)
TABLE_ABOVE = 0.01
#: the table's spacing: at most a 128th of the null law's mean and a 32nd of its standard
#: deviation (a law of many equal weights is narrow around its mean), so that log-linear
#: interpolation stays within 10⁻⁴ of the p-value, relative, down to `TABLE_ABOVE`, for the
#: laws references have. One weight over many tiny ones (a reference of near-copies of one
#: prompt) bends the curve near p = 1 more sharply: there the table is off by up to 10⁻²
#: (the table that stopped at 0.2 by 1.7·10⁻²), as far as the integral at one point is from
#: the integral with twice the nodes. No verdict is near: they are taken at 3·10⁻⁴ and below.
_TABLE_POINTS_PER_MEAN = 128
_TABLE_POINTS_PER_SD = 32
#: a null law needing more panels than this gets no table (512 points would take seconds)
_TABLE_MAX_PANELS = 1024
_SF_TABLES: dict[bytes, tuple[FloatArray, FloatArray, float]] = {}


def null_sf(x: float, weights: FloatArray) -> float:
    """`weighted_chi2_sf`, read from a table computed once per null law where the p-value is
    at least `TABLE_ABOVE` (within 10⁻⁴ of it, relative, but see `_TABLE_POINTS_PER_SD`;
    `tests/unit/test_drift_math_shortcuts.py`).

    A pinned reference judges every window against the same null law, and most quiet windows'
    p-values are large: no verdict turns on them, yet the integral took 1-2 ms each, a fifth of
    a window's evaluation in a replay (once in five quiet windows when the table stopped at
    0.2). Below `TABLE_ABOVE` — every p-value a verdict or a pooled span is decided on (the
    test's level is 3·10⁻⁴, shared out between the spans) — it is computed exactly. The table
    holds log p, which is nearly linear in x in the tail, so interpolating it stays within
    the tolerance there too."""
    w = np.asarray(weights, dtype=np.float64)
    key = w.tobytes()
    table = _SF_TABLES.get(key)
    if table is None:
        if len(_SF_TABLES) >= 64:
            _SF_TABLES.clear()
        table = _SF_TABLES[key] = _sf_table(w)
    xs, log_sfs, upto = table
    if 0.0 <= x <= upto:
        return math.exp(float(np.interp(x, xs, log_sfs)))
    return weighted_chi2_sf(x, w)


def _sf_table(w: FloatArray) -> tuple[FloatArray, FloatArray, float]:
    """ln P(Q > x) on a grid from 0 until P falls below `TABLE_ABOVE` (or to 4 means, or 10
    standard deviations past the mean, whichever comes first)."""
    total = float(w.sum())
    if total <= 0.0 or not len(w):
        return np.zeros(1), np.zeros(1), -1.0
    sd = math.sqrt(2.0 * float(w @ w))
    end = min(4.0 * total, total + 10.0 * sd)
    step = min(total / _TABLE_POINTS_PER_MEAN, sd / _TABLE_POINTS_PER_SD)
    xs = np.linspace(0.0, end, math.ceil(end / step) + 1)
    kept = w[w > total * 1e-9]
    if _imhof_panels(float(xs[-1]), kept)[1] > _TABLE_MAX_PANELS:
        # a null law of a few weights (a reference of a handful of distinct prompts) needs
        # millions of nodes: 512 points would take seconds and gigabytes; compute each exactly
        return np.zeros(1), np.zeros(1), -1.0
    sfs = np.ones_like(xs)
    sfs[1:] = _imhof(xs[1:], kept)
    below = np.flatnonzero(sfs < TABLE_ABOVE)
    upto = float(xs[below[0] - 1]) if len(below) else float(xs[-1])
    return xs, np.log(np.maximum(sfs, TABLE_ABOVE / 2)), upto


@functools.cache
def gauss_legendre(n: int) -> tuple[FloatArray, FloatArray]:
    """Gauss–Legendre nodes and weights on [-1, 1], computed once per n (read-only).

    `numpy.polynomial.legendre.leggauss` solves an eigenproblem each call: half the time of
    `weighted_chi2_sf` when it was called per window.
    """
    nodes, weights = np.polynomial.legendre.leggauss(n)
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def chernoff_sf_bound(x: float, weights: FloatArray) -> float:
    """Upper bound on P(Σᵢ wᵢ Zᵢ² > x): min over 0 < t < 1/(2 max w) of e^(−tx) Πᵢ (1 − 2twᵢ)^(−½).

    Markov's inequality on e^(tQ) with the χ²₁ moment generating function (Chernoff 1952).
    """
    w = np.asarray(weights, dtype=np.float64)
    w_max = float(w.max()) if len(w) else 0.0
    if w_max <= 0:
        return 0.0 if x > 0 else 1.0
    t = np.linspace(0.0, 1.0, 257)[1:-1, None] / (2.0 * w_max)
    log_bound = -t[:, 0] * x - 0.5 * np.log1p(-2.0 * t * w[None, :]).sum(axis=1)
    return float(min(1.0, math.exp(min(0.0, float(log_bound.min())))))


def satterthwaite_sf(x: float, weights: FloatArray) -> float:
    """Two-moment scaled-χ² approximation of `weighted_chi2_sf`, for comparison only."""
    w = np.asarray(weights, dtype=np.float64)
    s1, s2 = float(w.sum()), float((w**2).sum())
    if s1 <= 0:
        return 0.0 if x > 0 else 1.0
    scale, dof = s2 / s1, s1 * s1 / s2
    return _special.chi2_sf(dof, x / scale)  # what scipy.stats.chi2.sf computes


@dataclass(frozen=True)
class MeanEmbeddingTest:
    """RFF-MMD test of a window against a reference."""

    statistic: float  # nm/(n+m) ‖Δ‖², or ‖(Σ + γI)^(-½) Δ‖² times it when whitened
    p_value: float
    mmd2: float  # bias-corrected squared MMD estimate: the effect size
    mmd2_null_sd: float  # its standard deviation under H0 at these sample sizes


def mean_embedding_test(
    mean_current: FloatArray,
    n_current: int,
    mean_reference: FloatArray,
    n_reference: int,
    eigenvalues: FloatArray,
    whitened: Whitening | None = None,
) -> MeanEmbeddingTest:
    """Test H0: same distribution, from feature means and the reference feature covariance
    (`eigenvalues`); with `whitened`, the statistic and its null law are the whitened ones,
    while the effect size (MMD²) stays the plain one."""
    diff = mean_current - mean_reference
    sq = float(diff @ diff)
    factor = n_current * n_reference / (n_current + n_reference)
    if whitened is None:
        statistic = factor * sq
        p_value = null_sf(statistic, eigenvalues)
    else:
        statistic = whitened_statistic(diff, factor, whitened)
        p_value = null_sf(statistic, whitened.null_eigenvalues)
    trace = float(eigenvalues.sum())
    mmd2 = sq - trace / factor
    null_sd = math.sqrt(2.0 * float((eigenvalues**2).sum())) / factor
    return MeanEmbeddingTest(statistic, p_value, mmd2, null_sd)


def whitened_statistic(diff: FloatArray, factor: float, whitened: Whitening) -> float:
    """factor · ‖(Σ + γI)^(-½) diff‖²: a span's statistic, to rank spans before any p-value
    (every span shares the same null law, so the largest statistic has the smallest p)."""
    z = diff @ whitened.matrix
    return factor * float(z @ z)


def pooled_chi2_test(current: npt.NDArray[np.int64], reference: npt.NDArray[np.int64]) -> float:
    """p-value of Pearson's χ² on a 2×K table of counts, pooling sparse cells (Cochran 1954).

    Categories are sorted by expected count in the current row; the smallest are merged into
    one cell until every cell expects at least 5. With fewer than two cells left there is
    nothing to test and the p-value is 1.
    """
    cur = np.asarray(current, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    n_cur, n_ref = cur.sum(), ref.sum()
    if n_cur == 0 or n_ref == 0:
        return 1.0
    expected_cur = (cur + ref) * n_cur / (n_cur + n_ref)
    order = np.argsort(expected_cur, kind="stable")
    n_pooled = int((expected_cur < 5.0).sum())
    if 0 < n_pooled < len(order) and expected_cur[order[:n_pooled]].sum() < 5.0:
        n_pooled += 1  # the next cell expects ≥ 5, so the pooled cell does too
    pooled, kept = order[:n_pooled], order[n_pooled:]
    table_cur = np.concatenate([[cur[pooled].sum()], cur[kept]]) if n_pooled else cur[kept]
    table_ref = np.concatenate([[ref[pooled].sum()], ref[kept]]) if n_pooled else ref[kept]
    nonzero = (table_cur + table_ref) > 0
    if int(nonzero.sum()) < 2:
        return 1.0
    table = np.vstack([table_cur[nonzero], table_ref[nonzero]])
    # scipy.stats.chi2_contingency(table, correction=False), spelled out: every expected count
    # is positive here (both rows and every kept column have counts)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return _special.chi2_sf(table.shape[1] - 1, statistic)


def ks_reference(values: FloatArray) -> FloatArray:
    """A reference sample as `ks_test` reads it: NaNs dropped, sorted."""
    return np.sort(values[~np.isnan(values)])


def ks_test(
    current: FloatArray, reference: FloatArray, *, reference_prepared: bool = False
) -> tuple[float, float]:
    """(KS distance, p-value) of two samples, NaNs dropped; (0, 1) if either is empty.

    The same numbers as `scipy.stats.ks_2samp(cur, ref, method="asymp")`, without importing
    `scipy.stats` (see `detectors._ks`). `reference_prepared`: `reference` is already
    `ks_reference(...)` (sorted, without NaN), as a pinned reference is kept.
    """
    cur = current[~np.isnan(current)]
    ref = reference if reference_prepared else ks_reference(reference)
    if len(cur) == 0 or len(ref) == 0:
        return 0.0, 1.0
    distance = ks.ks_statistic_sorted(np.sort(cur), ref)
    return distance, ks.kolmogorov_sf(ks.effective_size(len(cur), len(ref)), distance)
