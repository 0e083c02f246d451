"""Equal-budget validation: does the allocated placement beat the presets and random ones?

For a study with a ``budget:`` whose placements include an allocated one (``allocate:``,
see ``loraplace.budget.generated``), this sets each allocated placement against

- every preset or spec of the study (budget-matched, so none spends more than the budget,
  though some may spend more of it than the allocation), paired over shared seeds,
  Holm-corrected as one family;
- the random placements of the same budget: their mean (one value per random placement,
  its seed-mean loss; the CI is over placements), and, per seed, the allocated loss minus
  the mean of the random placements' losses on that seed, tested as a paired difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loraplace.analysis.aggregate import Estimate, Summary, estimate
from loraplace.analysis.stats import PairedTest, holm, paired_test
from loraplace.budget.generated import generated_labels


@dataclass(frozen=True)
class BudgetRow:
    placement: str
    origin: str  # "preset or spec" | "allocated:SCORE" | "random"
    params: float | None
    loss: Estimate


@dataclass
class AllocatedCheck:
    """One allocated placement against the others of its budget."""

    placement: str
    loss: Estimate
    params: float | None
    vs_others: list[PairedTest]  # allocated (a) vs each non-generated placement (b)
    random_mean: Estimate | None  # over random placements' seed-mean losses
    vs_random: PairedTest | None  # per seed: allocated vs mean of the random placements

    @property
    def beats_all_others(self) -> bool:
        """Lower mean loss than every preset or spec of the budget."""
        return bool(self.vs_others) and all(
            t.diff is not None and t.diff.mean < 0 for t in self.vs_others
        )

    @property
    def beats_random_mean(self) -> bool | None:
        if self.random_mean is None:
            return None
        return self.loss.mean < self.random_mean.mean


@dataclass
class BudgetCheck:
    budget: int | None  # the study's budget in parameters, when the store records it
    budget_text: str  # as the study wrote it
    rows: list[BudgetRow]
    checks: list[AllocatedCheck] = field(default_factory=list)


def origins(config: dict) -> dict[str, str]:
    return generated_labels(list(config.get("placements") or []))


def budget_check(s: Summary) -> BudgetCheck | None:
    """The validation of a budgeted study, or None when the study has no budget."""
    cfg = s.study.config
    if cfg.get("budget") is None:
        return None
    org = origins(cfg)
    lora = [p for p in s.placements if p.kind == "lora"]
    rows = [
        BudgetRow(p.placement, org.get(p.placement, "preset or spec"), p.trainable_params, p.loss)
        for p in lora
    ]
    randoms = [p for p in lora if org.get(p.placement) == "random"]
    checks = []
    for a in (p for p in lora if org.get(p.placement, "").startswith("allocated:")):
        # Every preset or spec of the study: all are within the budget, and may spend more
        # of it than the allocation does (the stricter comparison).
        others = [b for b in lora if b.placement not in org]
        tests = [
            paired_test(a.placement, a.loss_by_seed, b.placement, b.loss_by_seed) for b in others
        ]
        adjusted = holm([t.p for t in tests])
        tests = [
            PairedTest(t.a, t.b, t.seeds, t.diff, t.t, t.p, adj)
            for t, adj in zip(tests, adjusted, strict=True)
        ]
        rmean = estimate(r.loss.mean for r in randoms) if randoms else None
        vs_random = None
        if randoms:
            per_seed: dict[int, float] = {}
            for seed in a.loss_by_seed:
                vals = [r.loss_by_seed[seed] for r in randoms if seed in r.loss_by_seed]
                if len(vals) == len(randoms):
                    per_seed[seed] = sum(vals) / len(vals)
            t = paired_test(a.placement, a.loss_by_seed, "random mean", per_seed)
            vs_random = PairedTest(t.a, t.b, t.seeds, t.diff, t.t, t.p, t.p)
        checks.append(
            AllocatedCheck(a.placement, a.loss, a.trainable_params, tests, rmean, vs_random)
        )
    return BudgetCheck(s.study.budget, str(cfg["budget"]), rows, checks)
