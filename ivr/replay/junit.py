"""JUnit XML for replay results, so CI systems show scenarios as test cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ivr.replay.runner import ReplayReport


def write_junit(reports: list[ReplayReport], path: str | Path, suite: str = "ivr.replay") -> None:
    """Write one ``<testcase>`` per scenario with its failures and transcript."""
    failures = sum(1 for r in reports if not r.passed)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(reports)),
        failures=str(failures),
        errors="0",
        time=f"{sum(r.seconds for r in reports):.3f}",
    )
    for report in reports:
        case = ET.SubElement(
            root,
            "testcase",
            classname=suite,
            name=report.scenario.name,
            file=str(report.scenario.path),
            time=f"{report.seconds:.3f}",
        )
        if not report.passed:
            failure = ET.SubElement(case, "failure", message=report.failures[0])
            failure.text = "\n".join(report.failures)
        ET.SubElement(case, "system-out").text = "\n".join(report.transcript)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
