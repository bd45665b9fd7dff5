"""The analysis on Kaggle: notebooks/analyze.ipynb pushed with the training kernels' outputs attached, then followed."""
from __future__ import annotations

import argparse
from typing import Any

from tools.kaggle.build import build_kernel, check_parameters, fit_title, resolve_accelerator
from tools.kaggle.calls import follow, kernel_ref, push_folder
from tools.notebook import ANALYZE_NOTEBOOK


def analysis_title(refs: list[str], slug: str | None = None) -> str:
    """The analysis kernel's title: --slug as words, else the words the kernels' slugs share up to their variant
    (e.g. 'train kaggle t4x2 analysis' for train-kaggle-t4x2-alpha-0, ...-alpha-0-2), then 'analysis'."""
    if slug:
        return slug.replace("-", " ")
    words = [ref.split("/")[1].split("-") for ref in refs]
    common = []
    for column in zip(*words):
        if len(set(column)) > 1 or column[0] in ("alpha", "seed"):
            break
        common.append(column[0])
    return fit_title([*(common or words[0]), "analysis"], sorted(refs))


def push_analysis(api: Any, user: str, kernels: list[str], params: dict[str, Any], args: argparse.Namespace) -> int:
    """Push analyze.ipynb with the training kernels' outputs attached (run_dirs names them), then follow it."""
    refs = list(dict.fromkeys(kernel_ref(kernel, user) for kernel in kernels))
    params = {**params, "run_dirs": refs}
    check_parameters(ANALYZE_NOTEBOOK, params)
    title = analysis_title(refs, args.slug)
    folder = build_kernel(ANALYZE_NOTEBOOK, params, user, title, private=not args.public, build_root=args.build_dir,
                          internet=args.internet, kernel_sources=tuple(refs),
                          accelerator=resolve_accelerator(args.accelerator))
    print(f"built {folder}, attaching the outputs of {len(refs)} training kernel(s)", flush=True)
    return follow(api, push_folder(api, folder), args)

