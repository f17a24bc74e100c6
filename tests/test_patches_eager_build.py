"""rasa_server/patches/eager_build.py: the model built eagerly predicts exactly as Rasa's build."""

from __future__ import annotations

import os

import pytest

from tools.stack import ROOT

PARSE_SCRIPT = """
import asyncio, json, sys
if sys.argv[1] == "eager":
    from rasa_server.patches import eager_build
    eager_build.install()
from rasa.core.agent import Agent
async def main():
    agent = Agent.load(sys.argv[2])
    out = []
    for text in json.loads(sys.argv[3]):
        r = await agent.parse_message(text)
        faq = (r.get("response_selector") or {}).get("faq")
        out.append([r["intent"]["name"], round(r["intent"]["confidence"], 5),
                    [(e["entity"], e["value"]) for e in r["entities"]],
                    faq and faq["response"]["intent_response_key"],
                    faq and round(faq["response"]["confidence"], 5)])
    print(json.dumps(out))
asyncio.run(main())
"""


def test_models_built_eagerly_predict_exactly_as_rasa_builds_them():
    """The trained model loaded both ways gives the same intents, confidences, entities and FAQ
    answers (the start-up speed-up changes how weights are created, not which)."""
    import json
    import subprocess
    import sys

    model = ROOT / "models" / "current.tar.gz"
    if not model.exists():
        pytest.skip("no trained model (make train)")
    texts = ["halo kak", "gmn cara dwnload sertif vaksin sy", "cek status vaksin ke 2 udh masuk blm",
             "otp nya ga masuk2", "nomor saya 0812 3456 7001", "kode 123456", "i want my vaccine certificate",
             "mau ganti email jadi budi@example.com", "kenapa sertifikat belum muncul", "mau bicara dengan petugas",
             "cuaca jakarta hari ini", "booster kapan ya", "batal", "3", "nik saya 3171014501900001"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    # Both loads at once: they are independent, and Rasa's own build is the slow one.
    running = {how: subprocess.Popen([sys.executable, "-c", PARSE_SCRIPT, how, str(model), json.dumps(texts)],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for how in ("rasa", "eager")}
    try:
        outputs = {how: process.communicate(timeout=600) for how, process in running.items()}
    finally:
        for process in running.values():
            process.kill()
    results = {}
    for how, (out, err) in outputs.items():
        assert running[how].returncode == 0, err[-2000:]
        results[how] = json.loads(out.strip().splitlines()[-1])
    assert len(results["rasa"]) == len(texts)
    assert results["eager"] == results["rasa"]
    # The FAQ answer is chosen for FAQ questions only (nlu_components/faq_selector.py).
    answered = {text: row[3] for text, row in zip(texts, results["rasa"])}
    assert answered["halo kak"] is None and answered["kode 123456"] is None
    faqs = [row for row in results["rasa"] if row[0] == "faq"]
    assert faqs and all(row[3].startswith("faq/") for row in faqs)
