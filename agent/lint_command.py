"""`opaudit lint`: inputs -> predictions -> the same rules -> table, JSON/YAML, SARIF or a
Helm values overlay. Wired here so that `cli` stays a dispatcher."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from agent.model import AuditConfig, LintResult, Severity
from agent.predict.imagefacts import ImageFacts
from agent.predict.runtimes import RUNTIME_NAMES


def load_images(args: argparse.Namespace) -> dict[str, ImageFacts]:
    images: dict[str, ImageFacts] = {}
    for ref, uid, gid in args.image_user:
        images[ref] = ImageFacts(ref=ref, uid=uid, gid=gid)
    if args.image:
        from agent.predict.ociarchive import read_image_facts

        for ref, path in args.image:
            images[ref] = read_image_facts(ref, path)
    return images


def run_lint(args: argparse.Namespace, config: AuditConfig, stream: TextIO) -> int:
    from agent.predict.lint import LintOptions, lint
    from agent.predict.manifests import read_inputs

    if not args.inputs and sys.stdin.isatty():
        raise ValueError("lint needs FILE, DIR or - (stdin is a terminal)")
    runtimes = RUNTIME_NAMES if args.runtime == "all" else (args.runtime,)
    options = LintOptions(runtimes=runtimes, seccomp_default=args.seccomp_default,
                          config=config, images=load_images(args))
    report = lint(read_inputs(args.inputs), options)
    from agent.output.table import terminal_width

    stream.write(render(report, args.output, terminal_width(os.environ, stream)))
    threshold = Severity.parse(args.fail_on).rank
    return 1 if any(f.severity.rank >= threshold for f in report.findings) else 0


def render(report: LintResult, output: str, width: int = 100) -> str:
    if output == "sarif":
        from agent import __version__
        from agent.output.sarif import RuleText, render_sarif
        from agent.rules.catalogue import CATALOGUE

        rules = [RuleText(r.id, r.severity, r.title, r.why, r.fix, r.category)
                 for r in CATALOGUE]
        return render_sarif(report, rules, __version__)
    if output == "helm-values":
        from agent.output.helmvalues import render_helm_values

        return render_helm_values(report)
    from agent.output.lintoutput import render_lint_document, render_lint_table

    if output in ("json", "yaml"):
        return render_lint_document(report, output)
    return render_lint_table(report, width)
