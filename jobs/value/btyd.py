"""Pareto/NBD and Gamma-Gamma: the buy-till-you-die forecast of a customer's future spend, and its spend model.

BG/NBD (the platform's churn baseline) lives in `churnops.jobs.baselines` and is reused, with its `RFM` inputs (repeat
purchase days x, time of the last purchase t_x and age T, in weeks from the first purchase day).

- **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987; likelihood and conditional expectation as derived by Fader
  & Hardie 2005, "A note on deriving the Pareto/NBD model and related expressions"): purchases Poisson at rate
  lambda ~ Gamma(r, alpha) while alive, lifetime exponential at rate mu ~ Gamma(s, beta), so a customer can die at
  any time, not only right after a purchase as in BG/NBD.
- **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013, "The Gamma-Gamma model of
  monetary value"): a customer's spend per transaction is Gamma(p, nu) around their own mean, nu ~ Gamma(q, gamma)
  across customers; it is fitted on each repeat buyer's mean repeat-transaction spend and shrinks that mean towards
  the population's by how many transactions it rests on.

Both are fitted by maximum likelihood on the log scale and checked against the published CDNOW parameters in
`tests/value/test_btyd.py`. Value = E[purchases in the horizon] x E[spend per purchase], undiscounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special

from churnops.jobs.baselines import RFM, distinct_triples
from churnops.jobs.value.exact_sum import exact_sum

# Fitted parameters stay within exp(-8) .. exp(8) (0.0003 .. 2981).
LOG_PARAM_BOUND = 8.0
# Pareto/NBD's dropout shape s stays at or below exp(3) (about 20). With a short history the dropout process is
# barely identified and s and beta run off together towards infinity (every customer the same dropout rate s/beta),
# where the likelihood is flat and each evaluation of its hypergeometric series slow (0.2 s at s = 150 on 2k
# customers). A Gamma(20, beta) rate varies by 22 % across customers: already that homogeneous model.
LOG_MAX_DROPOUT_SHAPE = 3.0


@dataclass(frozen=True)
class ParetoNBDParams:
    """Pareto/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout rate ~ Gamma(s, beta); time in weeks."""

    r: float
    alpha: float
    s: float
    beta: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, gamma) across customers."""

    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def population_mean_spend(self) -> float:
        """E[spend per transaction] of a customer with no repeat purchase yet: p * gamma / (q - 1)."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else float("inf")


def _log_hyp2f1_next(a: np.ndarray, b: np.ndarray | float, z: np.ndarray) -> np.ndarray:
    """log 2F1(a, b; a + 1; z) through Euler's transformation (1 - z)^(1 - b) 2F1(1, a + 1 - b; a + 1; z).

    The transformed series has first parameter 1 and stays finite for the large frequencies (x of 100 and more)
    where the direct series overflows as z approaches 1.
    """
    return (1.0 - b) * np.log1p(-z) + np.log(special.hyp2f1(1.0, a + 1.0 - b, a + 1.0, z))


def _pareto_nbd_log_terms(params: ParetoNBDParams, rfm: RFM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log of the 'alive at T' term, log of the 'died in (t_x, T]' term, log-likelihood) per customer."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    x, t_x, age = rfm.frequency, rfm.recency, rfm.age
    rsx = r + s + x
    # A0 = integral over the death time in (t_x, T]; its closed form takes the larger of alpha, beta as the base.
    if alpha >= beta:
        base, b = alpha, s + 1.0
    else:
        base, b = beta, r + x
    gap = abs(alpha - beta)

    def log_integral_to(t: np.ndarray) -> np.ndarray:
        return _log_hyp2f1_next(rsx, b, gap / (base + t)) - rsx * np.log(base + t)

    log_from_last, log_to_age = log_integral_to(t_x), log_integral_to(age)
    with np.errstate(divide="ignore"):
        # A0 = F(t_x) - F(T) >= 0; exactly 0 when the last purchase was at T.
        log_died = log_from_last + np.log(-np.expm1(np.minimum(log_to_age - log_from_last, 0.0)))
        log_died_weighted = np.log(s / rsx) + log_died
    log_alive = -(r + x) * np.log(alpha + age) - s * np.log(beta + age)
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return log_alive, log_died_weighted, common + np.logaddexp(log_alive, log_died_weighted)


def pareto_nbd_log_likelihood(params: ParetoNBDParams, rfm: RFM) -> np.ndarray:
    """Each customer's log-likelihood of (x, t_x, T) under Pareto/NBD (Fader & Hardie 2005, equation 22)."""
    return _pareto_nbd_log_terms(params, rfm)[2]


def pareto_nbd_probability_alive(params: ParetoNBDParams, rfm: RFM) -> np.ndarray:
    """P(still alive at T | x, t_x, T) (Fader & Hardie 2005, equation 18)."""
    log_alive, log_died, _ = _pareto_nbd_log_terms(params, rfm)
    return np.exp(log_alive - np.logaddexp(log_alive, log_died))


def pareto_nbd_expected_purchases(params: ParetoNBDParams, rfm: RFM, horizon_weeks: float) -> np.ndarray:
    """E[purchases in (T, T + horizon] | x, t_x, T] (Fader & Hardie 2005, equation 24)."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    x, age = rfm.frequency, rfm.age
    # (1 - ((beta+T)/(beta+T+t))^(s-1)) / (s-1), written so that s = 1 (where it tends to log) stays finite.
    log_ratio = np.log1p(horizon_weeks / (beta + age))
    shape = s - 1.0
    dying_horizon = log_ratio if abs(shape) < 1e-9 else -np.expm1(-shape * log_ratio) / shape
    return pareto_nbd_probability_alive(params, rfm) * (r + x) * (beta + age) / (alpha + age) * dying_horizon


def _fit_by_log_likelihood(
    total_log_likelihood: Callable[[np.ndarray], float], start: np.ndarray, bounds: list[tuple[float, float]], name: str
) -> np.ndarray:
    """Maximise a log-likelihood over positive parameters on the log scale, within `bounds` (of the logs), with
    L-BFGS-B; Nelder-Mead only if that ends on a non-finite value (its finite differences cannot step off one)."""

    def negative(log_params: np.ndarray) -> float:
        value = total_log_likelihood(np.exp(log_params))
        return -value if np.isfinite(value) else np.inf

    with np.errstate(all="ignore"):  # finite differences next to an infinite value are NaN: the search steps back
        best = optimize.minimize(negative, start, method="L-BFGS-B", bounds=bounds)
        if not np.isfinite(best.fun):
            best = optimize.minimize(negative, start, method="Nelder-Mead", bounds=bounds, options={"maxiter": 2000})
    if not np.isfinite(best.fun):
        raise ValueError(f"{name} fit failed: the likelihood is not finite at the optimum")
    return np.exp(best.x)


def fit_pareto_nbd(rfm: RFM) -> ParetoNBDParams:
    """Maximum-likelihood Pareto/NBD parameters; customers sharing (x, t_x, T) share one weighted term."""
    distinct, counts = distinct_triples(rfm)
    return fit_pareto_nbd_on_triples(distinct, counts, float(np.mean(rfm.age)))


def fit_pareto_nbd_on_triples(distinct: RFM, counts: np.ndarray, mean_age: float) -> ParetoNBDParams:
    """`fit_pareto_nbd` from the population's distinct (x, t_x, T) (`distinct_triples`), how many customers have
    each, and the customers' mean T (where the search starts): all the fit reads of the customers."""

    def total(values: np.ndarray) -> float:
        return float(np.dot(counts, pareto_nbd_log_likelihood(ParetoNBDParams(*values), distinct)))

    scale = np.log(max(mean_age, 1.0))
    start = np.array([np.log(0.5), scale, np.log(0.5), scale])
    wide = (-LOG_PARAM_BOUND, LOG_PARAM_BOUND)
    bounds = [wide, wide, (-LOG_PARAM_BOUND, LOG_MAX_DROPOUT_SHAPE), wide]
    return ParetoNBDParams(*(float(v) for v in _fit_by_log_likelihood(total, start, bounds, "Pareto/NBD")))


def _check_spend_inputs(frequency: np.ndarray, mean_spend: np.ndarray) -> None:
    if len(frequency) != len(mean_spend):
        raise ValueError(f"frequency has {len(frequency)} customers but mean_spend has {len(mean_spend)}")
    if len(frequency) == 0 or np.any(frequency < 1) or np.any(~(mean_spend > 0)):
        raise ValueError(
            "Gamma-Gamma is fitted on repeat buyers only: every frequency must be >= 1 and every mean spend > 0 "
            "(drop customers without a repeat purchase or with a zero mean before fitting)"
        )


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency: np.ndarray, mean_spend: np.ndarray) -> np.ndarray:
    """Each repeat buyer's log density of their mean spend over `frequency` transactions (Fader & Hardie 2013,
    equation 3): the mean of x Gamma(p, nu) draws is Gamma(p x, nu x), integrated over nu ~ Gamma(q, gamma)."""
    p, q, gamma = params.p, params.q, params.gamma
    x, m = np.asarray(frequency, dtype=float), np.asarray(mean_spend, dtype=float)
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(gamma + x * m)
    )


def fit_gamma_gamma(frequency: np.ndarray, mean_spend: np.ndarray) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from repeat buyers' transaction counts and mean spends."""
    frequency, mean_spend = np.asarray(frequency, dtype=float), np.asarray(mean_spend, dtype=float)
    _check_spend_inputs(frequency, mean_spend)

    def total(params: GammaGammaParams) -> float:
        return exact_sum(gamma_gamma_log_likelihood(params, frequency, mean_spend))

    return fit_gamma_gamma_by(total, float(np.median(mean_spend)))


def fit_gamma_gamma_by(
    total_log_likelihood: Callable[[GammaGammaParams], float], median_spend: float
) -> GammaGammaParams:
    """`fit_gamma_gamma` given the buyers' total log-likelihood as a function of the parameters (summed exactly,
    `churnops.jobs.value.exact_sum`, so that it is one number however the buyers are split) and their median mean
    spend (where the search starts)."""
    start = np.log([1.0, 2.0, median_spend])
    bounds = [(-LOG_PARAM_BOUND, LOG_PARAM_BOUND)] * 3

    def total(values: np.ndarray) -> float:
        return total_log_likelihood(GammaGammaParams(*values))

    return GammaGammaParams(*(float(v) for v in _fit_by_log_likelihood(total, start, bounds, "Gamma-Gamma")))


def gamma_gamma_expected_spend(params: GammaGammaParams, frequency: np.ndarray, mean_spend: np.ndarray) -> np.ndarray:
    """E[spend per future transaction | x, mean spend] (Fader & Hardie 2013, equation 5): a weighted average of
    the population mean and the customer's own mean; customers with x = 0 get the population mean."""
    p, q, gamma = params.p, params.q, params.gamma
    x = np.asarray(frequency, dtype=float)
    m = np.where(x > 0, np.asarray(mean_spend, dtype=float), 0.0)
    return p * (gamma + x * m) / (p * x + q - 1)
