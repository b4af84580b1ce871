"""The report's first screen: I-SPLIT's pick and the evidence-backed pick with the measured reason,
above everything else; a run folder from before either existed still reports (one pick)."""

import html
import json
import re

from isplit.cli import main
from isplit.importance.registry import EVIDENCE_REASON


def _summary(run) -> str:
    assert main(["report", str(run), "--samples", "0"]) == 0
    page = (run / "report.html").read_text()
    return re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)


def test_the_first_screen_shows_both_picks_first(demo_run_copy, capsys):
    doc = json.loads((demo_run_copy / "curves.json").read_text())
    summary = _summary(demo_run_copy)
    picks = summary.split('<table class="facts">')[0]  # above the facts: the picks
    assert picks.count("<tr") == 3  # the header and two picks
    assert "I-SPLIT&#x27;s pick (the CUI maximum, the paper&#x27;s method)" in picks
    assert "evidence-backed pick (the pca-probe maximum)" in picks
    for role in ("isplit", "evidence"):
        assert f"<code>{doc['picks'][role]['point']}</code>" in picks
        assert f"{doc['picks'][role]['head_flops'] / 1e6:.1f}" in picks
    assert html.escape(EVIDENCE_REASON) in picks
    assert ("The two picks agree" in picks) == doc["picks"]["agree"]


def test_an_old_run_folder_without_picks_or_pca_probe_reports(demo_run_copy, capsys):
    path = demo_run_copy / "curves.json"
    doc = json.loads(path.read_text())
    del doc["picks"]
    doc["predictors"] = ["cui"]
    for p in doc["points"]:
        p.pop("pca-probe")
    doc["settings"].pop("probe_ratio")
    path.write_text(json.dumps(doc))
    summary = _summary(demo_run_copy)
    picks = summary.split('<table class="facts">')[0]
    assert picks.count("<tr") == 2 and f"<code>{doc['best']}</code>" in picks
    assert "evidence-backed" not in summary and EVIDENCE_REASON[:40] not in summary
