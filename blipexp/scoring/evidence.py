"""How sure a result is: bootstrap intervals of a model's caption metrics, and paired tests between two models, from
the per-image scores of one scoring (`metrics.ImageScores`): nothing is captioned or scored again.

- Intervals: percentile bootstrap over images. Each of R resamples draws the scored images with replacement; its
  corpus metrics are recomputed from the per-image scores (means; BLEU from the summed sufficient statistics, as
  sacrebleu does), all resamples at once as one matrix product. The interval holds the middle 95% of them.
- Paired comparisons (B - A on the same images): the difference's interval comes from the paired bootstrap (one
  index matrix shared by both models and every metric); its p-value from paired approximate randomization: each of
  R trials swaps the two models' outputs on a random half of the images, and p = (trials whose absolute difference
  reaches the observed one + 1) / (R + 1). Randomization is exact under its null (the two models' outputs are
  exchangeable on each image), so its false-alarm rate is at most alpha on any number of images; the bootstrap's
  own test (sacrebleu's --paired-bs) is known to be conservative, rejecting far less often than alpha.

Below MIN_IMAGES images there is no interval and no test: they would claim more than a handful of images can show.

CIDEr's idf stays the one the full set was scored with (a corpus's, or the scored set's own for cider_coco): a
resample is a reweighting of fixed per-image scores. Recomputing the idf per resample would count a duplicated image
as two documents and make every image's score depend on which others were drawn.

Randomness is seeded (the spec's seed): the same scores give the same intervals and p-values on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..experiment.metric_keys import METRIC_KEYS
from .metrics import ImageScores

LEVEL = 0.95  # the intervals' coverage
ALPHA = 0.05  # the significance level a verdict uses unless told otherwise
# Below 10 images a percentile-bootstrap interval is too narrow to be a 95% one (it shrinks the spread by
# sqrt((n-1)/n) and has normal, not t, tails): on the simulated captions of tests/test_evidence.py it covers the truth
# in 74% of samples of 3 images, 83% of 5, about 90% of 10; and below 6 images the randomization test cannot reach
# p < 0.05 at all (its smallest p is 2 / 2^n).
MIN_IMAGES = 10
_CHUNK = 250  # resamples per matrix product: bounds memory to 250 x images weights at a time


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __str__(self) -> str:
        return f"[{self.low:.3f}, {self.high:.3f}]"


def too_few(images: int) -> str | None:
    """Why `images` scored images get no interval and no test, or None when they are enough."""
    if images >= MIN_IMAGES:
        return None
    return f"too few images for an interval (n={images}, fewer than {MIN_IMAGES})"


def check_alpha(alpha: float) -> float:
    """`alpha` itself; a ValueError unless it is a significance level."""
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha {alpha}: a significance level in (0, 1), e.g. 0.05")
    return alpha


def signature(resamples: int, seed: int, idf: str, images: int, test: str | None = None) -> str:
    """How the numbers were made, as sacrebleu's signature: e.g. 'bs:1000|seed:42|idf:corpus|images:64'."""
    parts = [f"bs:{resamples}", f"seed:{seed}", f"idf:{idf}", f"images:{images}"]
    return "|".join(parts + ([f"test:{test}"] if test else []))


def _num(value: float, sign: bool = False) -> str:
    """Three significant digits, as the console shows a metric: 4.65, 0.412, 0.0499."""
    return f"{value:+.3g}" if sign else f"{value:.3g}"


def resample_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, images) counts: how often each image is drawn in each bootstrap resample."""
    drawn = rng.integers(0, images, size=(resamples, images))
    offsets = np.arange(resamples)[:, None] * images
    return np.bincount((drawn + offsets).ravel(), minlength=resamples * images).reshape(resamples, images)


def _resampled(scores: ImageScores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's value in every resample, computed a chunk of resamples at a time."""
    chunks = [scores.corpus(weights[start:start + _CHUNK]) for start in range(0, len(weights), _CHUNK)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in METRIC_KEYS}


def _percentiles(values: np.ndarray) -> Interval:
    low, high = np.percentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return Interval(float(low), float(high))


def intervals(scores: ImageScores, resamples: int, seed: int) -> dict[str, Interval]:
    """A 95% percentile-bootstrap interval per caption metric ({} when resamples is 0 or the images are too few)."""
    if resamples <= 0 or too_few(len(scores)):
        return {}
    weights = resample_weights(len(scores), resamples, np.random.default_rng(seed))
    return {key: _percentiles(values) for key, values in _resampled(scores, weights).items()}


@dataclass(frozen=True)
class Difference:
    """One metric of a paired comparison: A's and B's values on the same images, B - A with its interval and p
    (None, None and None on too few images: then nothing is tested)."""

    metric: str
    a: float
    b: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    images: int

    @property
    def difference(self) -> float:
        return self.b - self.a

    @property
    def tested(self) -> bool:
        return self.p_value is not None

    def significant(self, alpha: float = ALPHA) -> bool:
        """The two-sided paired randomization test rejects "no difference" at `alpha`."""
        return self.p_value is not None and self.p_value < alpha

    def verdict(self, alpha: float = ALPHA, a: str = "A", b: str = "B", higher_is_better: bool = True) -> str:
        """One line, e.g. 'B is better than A on cider by 0.41 [0.12, 0.70], p = 0.004 (64 images)': the winner's
        lead with its signed interval, and a warning where the interval and p disagree."""
        if not self.tested:
            return f"{too_few(self.images)}: {b} - {a} on {self.metric} is {_num(self.difference, sign=True)}, untested"
        p = f"p = {self.p_value:.3f} ({self.images} images)"
        if not self.significant(alpha):
            line = (f"no significant difference on {self.metric}: {_num(self.difference, sign=True)} "
                    f"[{_num(self.ci_low, sign=True)}, {_num(self.ci_high, sign=True)}], {p}")
        else:
            b_better = (self.difference > 0) == higher_is_better
            winner, loser = (b, a) if b_better else (a, b)
            # the lead is |B - A|: its interval is B - A's, or A - B's when B - A is negative
            low, high = (self.ci_low, self.ci_high) if self.difference > 0 else (-self.ci_high, -self.ci_low)
            line = f"{winner} is better than {loser} on {self.metric} by {_num(abs(self.difference))} " \
                   f"[{_num(low)}, {_num(high)}], {p}"
        return line + self._disagreement()

    def _disagreement(self) -> str:
        """A warning when the 95% interval and the randomization test at 1 - LEVEL say different things."""
        excludes_zero = self.ci_low > 0 or self.ci_high < 0
        if (self.p_value < 1 - LEVEL) == excludes_zero:
            return ""
        level = f"{1 - LEVEL:g}"
        if excludes_zero:
            return (f"; but the 95% interval excludes 0 (the bootstrap finds a difference at {level} where the "
                    "randomization test does not): borderline evidence")
        return (f"; but the 95% interval includes 0 (the bootstrap finds no difference at {level} where the "
                "randomization test does): borderline evidence")

    def as_dict(self) -> dict[str, float | None]:
        return {"a": self.a, "b": self.b, "difference": self.difference, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "p_value": self.p_value}


def paired(a: ImageScores, b: ImageScores, resamples: int, seed: int) -> dict[str, Difference]:
    """B against A on the same images, per caption metric: the difference, its paired-bootstrap interval and the
    paired approximate-randomization p-value (module docstring). `resamples` (> 0) serves both. On fewer than
    MIN_IMAGES images only the difference."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a paired comparison needs both models scored on the same images: got {len(a)} and "
                         f"{len(b)} scored images")
    if resamples <= 0:
        raise ValueError(f"resamples={resamples}: a paired comparison needs at least 1 (e.g. 1000)")
    observed_a, observed_b = a.corpus(), b.corpus()
    if too_few(len(a)):
        return {key: Difference(key, observed_a[key], observed_b[key], None, None, None, len(a))
                for key in METRIC_KEYS}
    rng = np.random.default_rng(seed)
    weights = resample_weights(len(a), resamples, rng)
    resampled_a, resampled_b = _resampled(a, weights), _resampled(b, weights)
    swapped = rng.integers(0, 2, size=(resamples, len(a))).astype(float)
    shuffled = _randomized_differences(a, b, swapped)
    result = {}
    for key in METRIC_KEYS:
        observed = observed_b[key] - observed_a[key]
        # a small tolerance: a trial that reproduces the observed difference up to rounding counts as reaching it
        reached = int(np.sum(np.abs(shuffled[key]) >= abs(observed) - 1e-12))
        interval = _percentiles(resampled_b[key] - resampled_a[key])
        result[key] = Difference(key, observed_a[key], observed_b[key], interval.low, interval.high,
                                 (reached + 1) / (resamples + 1), len(a))
    return result


def _randomized_differences(a: ImageScores, b: ImageScores, swapped: np.ndarray) -> dict[str, np.ndarray]:
    """B' - A' per trial, where trial t gives A B's output (and B A's) on the images swapped[t] marks. The pseudo
    systems are weightings of both models' images stacked: A's rows then B's, each image counted once per system."""
    both = ImageScores(means={key: np.concatenate([a.means[key], b.means[key]]) for key in a.means},
                       bleu_stats=np.concatenate([a.bleu_stats, b.bleu_stats]))
    parts: dict[str, list[np.ndarray]] = {key: [] for key in METRIC_KEYS}
    for start in range(0, len(swapped), _CHUNK):
        mask = swapped[start:start + _CHUNK]
        pseudo_a = both.corpus(np.concatenate([1 - mask, mask], axis=1))
        pseudo_b = both.corpus(np.concatenate([mask, 1 - mask], axis=1))
        for key in METRIC_KEYS:
            parts[key].append(pseudo_b[key] - pseudo_a[key])
    return {key: np.concatenate(values) for key, values in parts.items()}
