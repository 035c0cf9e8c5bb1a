"""A whole ridge path with leave-one-out errors: decaylab's one SVD against scikit-learn, measured in one run.

    python benchmarks/ridge_path.py                  # diabetes (442 × 10) and a 2000 × 200 synthetic set
    python benchmarks/ridge_path.py --lambdas 1000

For L values of λ, ``decaylab.ridge_path`` + ``decaylab.closed_form.ridge_gcv`` (coefficients, exact
leave-one-out error, GCV and degrees of freedom, all from one SVD of the centred X) against the two
obvious scikit-learn routes to the same numbers:

* ``Ridge(alpha=n·λ).fit`` once per λ (coefficients only), and
* ``RidgeCV(alphas=n·λ, store_cv_results=True)`` (scikit-learn's efficient leave-one-out, which also
  decomposes X once; its ``cv_results_`` are the per-sample LOO errors).

Each is timed ``--repeats`` times, alternately, and the best time counts; the coefficients are checked to
agree before anything is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def datasets(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    rng = np.random.default_rng(seed)
    Xs = rng.standard_normal((2000, 200))
    ys = Xs @ rng.standard_normal(200) + 3.0 * rng.standard_normal(2000)
    return {"diabetes 442 × 10": (X, y), "synthetic 2000 × 200": (Xs, ys)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", type=int, default=300, help="number of λ values (log-spaced in [1e-5, 1e3])")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from sklearn.linear_model import Ridge, RidgeCV

    from decaylab.closed_form import ridge_gcv, ridge_path
    from decaylab.threads import limited_threads

    lambdas = np.logspace(-5, 3, args.lambdas)
    print(f"{args.lambdas} λ, best of {args.repeats}, one thread for every library")
    print(f"{'data':<22} {'decaylab path+LOO':>18} {'Ridge × L':>12} {'RidgeCV':>10} {'vs Ridge':>9} {'vs RidgeCV':>11}")
    with limited_threads(1):
        for name, (X, y) in datasets().items():
            n = len(y)

            # timed within this iteration; this data set's X, y and n bound as defaults all the same
            def ours(X: np.ndarray = X, y: np.ndarray = y) -> object:
                return ridge_path(X, y, lambdas), ridge_gcv(X, y, lambdas)

            def per_lambda(X: np.ndarray = X, y: np.ndarray = y, n: int = n) -> list[np.ndarray]:
                return [Ridge(alpha=n * lam).fit(X, y).coef_ for lam in lambdas]

            def ridge_cv(X: np.ndarray = X, y: np.ndarray = y, n: int = n) -> object:
                return RidgeCV(alphas=n * lambdas, store_cv_results=True).fit(X, y)

            coefs, _ = ridge_path(X, y, lambdas)
            gap = np.max(np.abs(np.asarray(coefs) - np.asarray(per_lambda())))
            assert gap < 1e-6 * max(1.0, float(np.abs(coefs).max())), f"{name}: paths differ by {gap:.2g}"
            times = [best_of(fn, args.repeats) for fn in (ours, per_lambda, ridge_cv)]
            print(
                f"{name:<22} {times[0]:>16.4f} s {times[1]:>10.4f} s {times[2]:>8.4f} s"
                f" {times[1] / times[0]:>8.1f}× {times[2] / times[0]:>10.1f}×   (max |Δw| vs Ridge {gap:.1e})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
