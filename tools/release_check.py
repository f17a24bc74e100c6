"""Before a release: every image of an overlay pinned by a real digest.

    .venv/bin/python -m tools.release_check deploy/overlays/production      (make release-check)

Renders each overlay with `kubectl kustomize` and refuses an image without a digest (a tag can
be moved to another image) and the all-zero placeholder digests the overlays ship with. Prints
one line per refused image and exits 1; exits 0 when every image is pinned; exits 2 when it
cannot check (kubectl missing, the overlay does not render). The rest of deploy/ (connection
budget, volume, TLS of the rendered overlays) is checked by `pytest tests/test_deploy*.py`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PINNED, REFUSED, CANNOT_CHECK = 0, 1, 2
DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")
PLACEHOLDER_DIGEST = "0" * 64
WORKLOADS = ("Deployment", "StatefulSet", "CronJob", "Job", "DaemonSet")


def render(target: Path) -> dict[tuple[str, str], dict]:
    """A kustomization rendered by kubectl: (kind, name) -> object."""
    done = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "kubectl kustomize failed")
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}


def pod_spec(objects: dict, kind: str, name: str) -> dict:
    spec = objects[(kind, name)]["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workload_containers(objects: dict) -> list[tuple[tuple[str, str, str], dict, bool]]:
    """((kind, workload, container), container, is_init) for every container of every workload."""
    out = []
    for (kind, name) in objects:
        if kind in WORKLOADS:
            spec = pod_spec(objects, kind, name)
            out += [((kind, name, c["name"]), c, False) for c in spec.get("containers", [])]
            out += [((kind, name, c["name"]), c, True) for c in spec.get("initContainers", [])]
    return out


def image_problems(objects: dict, release: bool) -> list[str]:
    """Images that may change under the same name. Release: every image by a real digest.
    Otherwise: a tag or a digest, the documented placeholders included, never none or latest."""
    problems = []
    for (kind, workload, cname), container, _ in workload_containers(objects):
        image = container["image"]
        digest = DIGEST.search(image)
        if release and (not digest or digest.group(1) == PLACEHOLDER_DIGEST):
            problems.append(f"{kind}/{workload}/{cname}: {image}" + (" (placeholder digest)" if digest else " (no digest)"))
        if not release and not digest and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            problems.append(f"{kind}/{workload}/{cname}: {image} (no tag)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.release_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overlays", nargs="+", type=Path, metavar="OVERLAY",
                        help="a kustomization folder, e.g. deploy/overlays/production")
    args = parser.parse_args(argv)
    if shutil.which("kubectl") is None:
        print("release check: kubectl not found (it renders the overlays); nothing checked")
        return CANNOT_CHECK
    status = PINNED
    for overlay in args.overlays:
        try:
            objects = render(overlay)
        except (RuntimeError, subprocess.TimeoutExpired, yaml.YAMLError) as error:
            print(f"{overlay}: does not render: {error}")
            return CANNOT_CHECK
        problems = image_problems(objects, release=True)
        for problem in problems:
            print(f"{overlay}: not pinned by a real digest: {problem}")
        if problems:
            status = REFUSED
        else:
            print(f"{overlay}: every image pinned by a digest ({len(workload_containers(objects))} containers)")
    return status


if __name__ == "__main__":
    sys.exit(main())
