"""The works a report cites: BibTeX entries, in-text citations and the reference list.

A citation is a ``Cite`` part: plain text ("(Hu et al., 2022)") to the Markdown and HTML
renderers, which treat it like any generated string, and ``\\citep{key}`` to the LaTeX
writer, which resolves it against the ``references.bib`` written beside the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraplace.report.render import Bullets, Document, FigureBlock, Heading, Para, TableBlock


@dataclass(frozen=True)
class Work:
    """One bibliography entry; ``authors`` as "Last, First" strings."""

    key: str
    kind: str  # BibTeX entry type: article | inproceedings | misc
    authors: tuple[str, ...]
    title: str
    year: int
    venue: str  # journal, booktitle or howpublished, by kind
    extra: tuple[tuple[str, str], ...] = ()  # volume, pages, url, ...

    @property
    def short(self) -> str:
        """Author-year label as natbib's \\citep prints it with plainnat."""
        last = [a.split(",")[0] for a in self.authors]
        if len(last) == 1:
            who = last[0]
        elif len(last) == 2:
            who = f"{last[0]} and {last[1]}"
        else:
            who = f"{last[0]} et al."
        return f"{who}, {self.year}"


_VENUE_FIELD = {"article": "journal", "inproceedings": "booktitle", "misc": "howpublished"}

WORKS: dict[str, Work] = {
    w.key: w
    for w in (
        Work(
            "hu2022lora",
            "inproceedings",
            (
                "Hu, Edward J.",
                "Shen, Yelong",
                "Wallis, Phillip",
                "Allen-Zhu, Zeyuan",
                "Li, Yuanzhi",
                "Wang, Shean",
                "Wang, Lu",
                "Chen, Weizhu",
            ),
            "{LoRA}: Low-Rank Adaptation of Large Language Models",
            2022,
            "International Conference on Learning Representations (ICLR)",
        ),
        Work(
            "mangrulkar2022peft",
            "misc",
            (
                "Mangrulkar, Sourab",
                "Gugger, Sylvain",
                "Debut, Lysandre",
                "Belkada, Younes",
                "Paul, Sayak",
                "Bossan, Benjamin",
            ),
            "{PEFT}: State-of-the-art Parameter-Efficient Fine-Tuning methods",
            2022,
            "https://github.com/huggingface/peft",
        ),
        Work(
            "wolf2020transformers",
            "inproceedings",
            ("Wolf, Thomas", "Debut, Lysandre", "Sanh, Victor", "Chaumond, Julien", "others"),
            "Transformers: State-of-the-Art Natural Language Processing",
            2020,
            "Proceedings of the 2020 Conference on Empirical Methods in Natural Language "
            "Processing: System Demonstrations",
            (("pages", "38--45"),),
        ),
        Work(
            "paszke2019pytorch",
            "inproceedings",
            ("Paszke, Adam", "Gross, Sam", "Massa, Francisco", "Lerer, Adam", "others"),
            "{PyTorch}: An Imperative Style, High-Performance Deep Learning Library",
            2019,
            "Advances in Neural Information Processing Systems 32",
            (("pages", "8024--8035"),),
        ),
        Work(
            "radford2019gpt2",
            "misc",
            (
                "Radford, Alec",
                "Wu, Jeffrey",
                "Child, Rewon",
                "Luan, David",
                "Amodei, Dario",
                "Sutskever, Ilya",
            ),
            "Language Models are Unsupervised Multitask Learners",
            2019,
            "OpenAI technical report",
        ),
        Work(
            "loshchilov2019adamw",
            "inproceedings",
            ("Loshchilov, Ilya", "Hutter, Frank"),
            "Decoupled Weight Decay Regularization",
            2019,
            "International Conference on Learning Representations (ICLR)",
        ),
        Work(
            "loshchilov2017sgdr",
            "inproceedings",
            ("Loshchilov, Ilya", "Hutter, Frank"),
            "{SGDR}: Stochastic Gradient Descent with Warm Restarts",
            2017,
            "International Conference on Learning Representations (ICLR)",
        ),
        Work(
            "kalajdzievski2023rslora",
            "misc",
            ("Kalajdzievski, Damjan",),
            "A Rank Stabilization Scaling Factor for Fine-Tuning with {LoRA}",
            2023,
            "arXiv:2312.03732",
        ),
        Work(
            "student1908",
            "article",
            ("Student",),
            "The Probable Error of a Mean",
            1908,
            "Biometrika",
            (("volume", "6"), ("number", "1"), ("pages", "1--25")),
        ),
        Work(
            "holm1979",
            "article",
            ("Holm, Sture",),
            "A Simple Sequentially Rejective Multiple Test Procedure",
            1979,
            "Scandinavian Journal of Statistics",
            (("volume", "6"), ("number", "2"), ("pages", "65--70")),
        ),
        Work(
            "schuirmann1987tost",
            "article",
            ("Schuirmann, Donald J.",),
            "A Comparison of the Two One-Sided Tests Procedure and the Power Approach for "
            "Assessing the Equivalence of Average Bioavailability",
            1987,
            "Journal of Pharmacokinetics and Biopharmaceutics",
            (("volume", "15"), ("number", "6"), ("pages", "657--680")),
        ),
        Work(
            "virtanen2020scipy",
            "article",
            ("Virtanen, Pauli", "Gommers, Ralf", "Oliphant, Travis E.", "others"),
            "{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in {Python}",
            2020,
            "Nature Methods",
            (("volume", "17"), ("pages", "261--272")),
        ),
    )
}


class Cite(str):
    """An in-text citation of ``keys``; its string value is the author-year text."""

    keys: tuple[str, ...]

    def __new__(cls, *keys: str) -> Cite:
        unknown = [k for k in keys if k not in WORKS]
        if unknown or not keys:
            raise KeyError(f"no bibliography entry for {unknown or 'an empty citation'}")
        obj = super().__new__(cls, "(" + "; ".join(WORKS[k].short for k in keys) + ")")
        obj.keys = tuple(keys)
        return obj


def cited_keys(parts_lists: list[list[str]]) -> list[str]:
    """Keys cited anywhere in these lists of parts, in order of first citation."""
    seen: dict[str, None] = {}
    for parts in parts_lists:
        for p in parts:
            if isinstance(p, Cite):
                for k in p.keys:
                    seen.setdefault(k, None)
    return list(seen)


def _plain(text: str) -> str:
    return text.replace("{", "").replace("}", "")


def reference_text(key: str) -> str:
    """One entry of the reference list, for Markdown and HTML."""
    w = WORKS[key]
    who = "; ".join(w.authors) if len(w.authors) <= 3 else f"{w.authors[0]} et al."
    extra = dict(w.extra)
    tail = ", ".join(
        v for v in (extra.get("volume"), extra.get("pages", "").replace("--", "–")) if v
    )
    return f"{who} ({w.year}). {_plain(w.title)}. {w.venue}" + (f", {tail}." if tail else ".")


def to_bibtex(keys: list[str]) -> str:
    """The BibTeX file of these entries, in the given order."""
    out = []
    for key in keys:
        w = WORKS[key]
        fields = [
            ("author", " and ".join(w.authors)),
            ("title", "{" + w.title + "}"),
            ("year", str(w.year)),
            (_VENUE_FIELD[w.kind], w.venue),
            *w.extra,
        ]
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
        out.append(f"@{w.kind}{{{key},\n{body}\n}}\n")
    return "\n".join(out)


REFERENCES_TITLE = "References"


def _document_parts(doc: Document) -> list[list[str]]:
    out: list[list[str]] = []
    for b in doc.blocks:
        if isinstance(b, Heading | Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out += b.items
        elif isinstance(b, FigureBlock):
            out.append(b.figure.caption)
        elif isinstance(b, TableBlock):
            out += b.table.notes
    return out


def add_references(doc: Document) -> list[str]:
    """Append the reference list of every work the document cites; return their keys."""
    keys = cited_keys(_document_parts(doc))
    if keys:
        doc.add(Heading(2, [REFERENCES_TITLE]), Bullets([[reference_text(k)] for k in keys]))
    return keys
