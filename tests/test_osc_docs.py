"""docs/osc.md is generated from the schema; this fails when the committed file is stale."""
import osc_docs as docs
from vacelive.bridge.schema import DEFAULT_SCHEMA


def test_committed_osc_docs_are_current():
    assert docs.DOC_PATH.read_text(encoding="utf-8") == docs.render(), (
        "docs/osc.md is stale: run `python scripts/osc_docs.py --write`"
    )


def test_docs_cover_every_address_and_the_check_flag(tmp_path):
    text = docs.render()
    for p in DEFAULT_SCHEMA:
        assert f"`{p.address}`" in text, p.address
    stale = tmp_path / "osc.md"
    stale.write_text(text.replace("/vace/seed", "/vace/sead"), encoding="utf-8")
    assert docs.main(["--check", "--path", str(stale)]) == 1
    assert docs.main(["--write", "--path", str(stale)]) == 0
    assert docs.main(["--check", "--path", str(stale)]) == 0
