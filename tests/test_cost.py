"""Prices: the matrix's price_per_hour, the Cloud Billing Catalog (its stand-in, through the real
google-cloud-billing client) and the shipped table, most specific first; the fallback when the
catalog cannot be asked; what `gpu-runner plan` says an entry costs per hour and at worst."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest
import requests

from gpu_runner import plan
from gpu_runner.cli import main
from gpu_runner.cost import catalog
from gpu_runner.cost.prices import HOURS_PER_MONTH, PriceBook, Shape, money, table
from standins.billing import AS_OF, COMPUTE_SERVICE_ID, PRICES, BillingStandIn, sku
from standins.schemas import billing_validator, problems

L4_SPEC = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "us-central1")
T4_SPEC = Shape("n1-standard-8", "nvidia-tesla-t4", 1, "pd-standard", 200, "us-central1")
MODELS = ("STANDARD", "SPOT")


def table_price(shape: Shape, model: str) -> float:
    """The hourly price the shipped table gives, worked out by hand from its figures."""
    t = table()
    vcpus, gib = t["machine_types"][shape.machine_type]
    fam = t["machine_families"][shape.machine_type.split("-")[0]][model]
    gpu = t["gpus"][shape.accelerator_type][model] * shape.accelerator_count
    disk = shape.disk_size_gb * t["disks_gib_month"][shape.disk_type] / 730
    return vcpus * fam["vcpu_hour"] + gib * fam["gib_hour"] + gpu + disk


def catalog_price(shape: Shape, model: str) -> float:
    """The hourly price the stand-in's catalog gives, worked out by hand from its SKUs."""
    vcpus, gib = table()["machine_types"][shape.machine_type]
    fam, r = shape.machine_type.split("-")[0], shape.region
    return (vcpus * PRICES[(f"{fam} core", r, model)] + gib * PRICES[(f"{fam} ram", r, model)]
            + shape.accelerator_count * PRICES[(shape.accelerator_type, r, model)]
            + shape.disk_size_gb * PRICES[(f"{shape.disk_type} disk", r, "STANDARD")] / HOURS_PER_MONTH)


@pytest.fixture
def billing(monkeypatch: pytest.MonkeyPatch):
    """The Billing Catalog stand-in, with gpu-runner pointed at it; what was asked is forgotten
    before and after."""
    catalog.forget()
    with BillingStandIn() as b:
        monkeypatch.setenv(catalog.EMULATOR_ENV, b.address)
        yield b
    catalog.forget()


@pytest.fixture
def no_catalog(monkeypatch: pytest.MonkeyPatch):
    catalog.forget()
    monkeypatch.delenv(catalog.EMULATOR_ENV, raising=False)
    monkeypatch.setenv(catalog.SWITCH_ENV, "0")
    yield
    catalog.forget()


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("shape", [L4_SPEC, T4_SPEC], ids=["g2+L4", "n1+T4"])
@pytest.mark.parametrize("model", MODELS)
def test_table_prices_a_standard_and_a_spot_vm(no_catalog, shape: Shape, model: str) -> None:
    p = PriceBook().price(shape, model)
    assert p.source == "table" and p.as_of == table()["as_of"] and p.estimate
    assert p.usd_per_hour == pytest.approx(table_price(shape, model), abs=1e-5)
    assert set(p.parts) == {"machine", "gpu", "disk"}
    assert sum(p.parts.values()) == pytest.approx(p.usd_per_hour, abs=1e-5)


def test_the_table_agrees_with_a_published_figure(no_catalog) -> None:
    # g2-standard-4 with its L4 is listed at about $0.7068 an hour on demand in us-central1 (VM only)
    p = PriceBook().price(Shape("g2-standard-4", "nvidia-l4", 1, "pd-balanced", 0, "us-central1"), "STANDARD")
    assert p.usd_per_hour == pytest.approx(0.7068, abs=0.002)
    spot = PriceBook().price(Shape("g2-standard-4", "nvidia-l4", 1, "pd-balanced", 0, "us-central1"), "SPOT")
    assert spot.usd_per_hour < p.usd_per_hour / 2


def test_the_table_knows_the_common_families_and_gpus() -> None:
    t = table()
    assert {"n1", "n2", "g2", "a2", "a3"} <= set(t["machine_families"])
    assert {"nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-h100-80gb",
            "nvidia-tesla-v100", "nvidia-tesla-p4", "nvidia-tesla-p100"} <= set(t["gpus"])
    for fam in t["machine_families"].values():
        assert set(fam) == {"STANDARD", "SPOT"} and fam["SPOT"]["vcpu_hour"] < fam["STANDARD"]["vcpu_hour"]
    for gpu in t["gpus"].values():
        assert 0 < gpu["SPOT"] < gpu["STANDARD"]
    assert t["machine_types"]["a2-highgpu-1g"] == [12, 85.0] and t["machine_types"]["n1-standard-8"] == [8, 30.0]
    # every GPU machine type gpu-runner pairs with a GPU family the table prices has a shape
    from gpu_runner.config import BUILTIN_GPU_TYPES
    for mt, (acc, _n) in BUILTIN_GPU_TYPES.items():
        if acc in t["gpus"]:
            assert mt in t["machine_types"], mt


def test_a_vm_the_table_cannot_price_says_so(no_catalog) -> None:
    p = PriceBook().price(Shape("n2d-standard-4", None, 0, "pd-balanced", 100, "us-central1"), "STANDARD")
    assert p.usd_per_hour is None and p.source is None
    assert "n2d-standard-4" in p.note and "price_per_hour" in p.note
    p = PriceBook().price(Shape("a3-ultragpu-8g", "nvidia-h200-141gb", 8, "pd-balanced", 100, "us-central1"), "SPOT")
    assert p.usd_per_hour is None and "nvidia-h200-141gb" in p.note


def test_another_region_is_priced_at_the_tables_region_and_says_so(no_catalog) -> None:
    shape = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "europe-west4")
    p = PriceBook().price(shape, "STANDARD")
    assert p.usd_per_hour == pytest.approx(table_price(shape, "STANDARD"), abs=1e-5)
    assert "europe-west4 priced at the table's us-central1 list prices" in p.note


# --------------------------------------------------------------------------- the matrix


def test_the_matrixs_price_wins_over_catalog_and_table(billing) -> None:
    book = PriceBook()
    both = book.price(L4_SPEC, "SPOT", {"STANDARD": 2.5, "SPOT": 1.25})
    assert (both.usd_per_hour, both.source, both.as_of) == (1.25, "matrix", None)
    # a price for spot only: the standard price comes from the next source
    own = {"SPOT": 0.3}
    assert book.price(L4_SPEC, "SPOT", own).source == "matrix"
    std = book.price(L4_SPEC, "STANDARD", own)
    assert std.source == "billing-catalog" and std.usd_per_hour == pytest.approx(catalog_price(L4_SPEC, "STANDARD"))


def test_price_per_hour_in_the_matrix(tmp_path: Path) -> None:
    m = tmp_path / "m.yml"
    m.write_text(textwrap.dedent("""\
        version: 1
        machines:
          a: {machine_type: g2-standard-8, zones: [us-central1-a], price_per_hour: 1.5}
          b: {machine_type: g2-standard-8, zones: [us-central1-a], price_per_hour: {spot: 0.4}}
          c: {machine_type: g2-standard-8, zones: [us-central1-a]}
        runtimes:
          r: {notebooks: [a.ipynb]}
        """))
    specs = {e.machine: e.gce.price_per_hour for e in plan.plan(m, env={}).entries}
    assert specs == {"a": {"STANDARD": 1.5, "SPOT": 1.5}, "b": {"SPOT": 0.4}, "c": None}


@pytest.mark.parametrize("value, message", [
    ("'1.5'", "price_per_hour: expected a number (USD per hour) or {standard: X, spot: Y}, got a string"),
    ("{spt: 1}", "price_per_hour.spt: unknown key 'spt'; did you mean 'spot'?"),
    ("{}", "price_per_hour: give standard, spot or both (USD per hour)"),
    ("-1", "price_per_hour: a price per hour is between 0 and 100000 (USD), got -1"),
    ("{spot: -1}", "price_per_hour.spot: input should be greater than or equal to 0"),
])
def test_a_bad_price_per_hour_is_a_usage_error_at_its_place(tmp_path: Path, value: str, message: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yml"
    m.write_text("version: 1\nmachines:\n  a: {machine_type: g2-standard-8, zones: [us-central1-a], "
                 f"price_per_hour: {value}}}\nruntimes:\n  r: {{notebooks: [a.ipynb]}}\n")
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(m), "--format", "json"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"m.yml:3:" in err and message in err, err


def test_a_local_machine_takes_no_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yml"
    m.write_text("version: 1\nmachines:\n  here: {provider: local, price_per_hour: 1}\n"
                 "runtimes:\n  r: {notebooks: [a.ipynb]}\n")
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(m), "--format", "json"])
    assert info.value.code == 2
    assert "machines.here.price_per_hour: price_per_hour is for gce machines" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Billing Catalog


@pytest.mark.parametrize("shape", [L4_SPEC, T4_SPEC], ids=["g2+L4", "n1+T4"])
@pytest.mark.parametrize("model", MODELS)
def test_the_catalog_prices_a_standard_and_a_spot_vm(billing, shape: Shape, model: str) -> None:
    p = PriceBook().price(shape, model)
    assert (p.source, p.as_of, p.note) == ("billing-catalog", AS_OF, None)
    assert p.usd_per_hour == pytest.approx(catalog_price(shape, model), abs=1e-5)
    assert p.usd_per_hour != pytest.approx(table_price(shape, model), abs=1e-3)  # not the table's figure


def test_the_catalog_is_read_page_by_page_and_asked_once_per_process(billing) -> None:
    first = PriceBook()
    first.price(L4_SPEC, "SPOT")
    pages = billing.calls["services.skus.list"]
    assert pages == -(-len(billing.skus) // billing.page_size_cap) > 1  # every page, once
    eu = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "europe-west4")
    for book in (first, PriceBook()):  # another book in the same run: no new listing
        assert book.price(eu, "STANDARD").usd_per_hour == pytest.approx(catalog_price(eu, "STANDARD"))
        book.price(T4_SPEC, "STANDARD")
    assert billing.calls["services.skus.list"] == pages and not billing.rejected


def test_skus_a_vm_price_must_not_take_are_left_out(billing) -> None:
    got = catalog.fetch()
    assert got.skus_read == len(billing.skus)
    assert max(got.prices.values()) < 1  # every decoy costs 9 dollars or more
    assert all(kind in ("core", "ram", "gpu", "disk") for kind, *_ in got.prices)


def test_a_region_the_catalog_does_not_list_falls_back_to_the_table(billing) -> None:
    shape = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "asia-east1")
    p = PriceBook().price(shape, "SPOT")
    assert p.source == "table" and p.usd_per_hour == pytest.approx(table_price(shape, "SPOT"), abs=1e-5)
    assert "the Cloud Billing Catalog lists no Compute Engine prices for asia-east1" in p.note


def test_a_vm_the_catalog_cannot_price_whole_takes_the_table_whole(billing) -> None:
    # the stand-in's catalog has no A2 cores and no A100: no figure mixes the two sources
    shape = Shape("a2-highgpu-1g", "nvidia-tesla-a100", 1, "pd-balanced", 100, "us-central1")
    p = PriceBook().price(shape, "STANDARD")
    assert p.source == "table" and p.usd_per_hour == pytest.approx(table_price(shape, "STANDARD"), abs=1e-5)
    assert "Cloud Billing Catalog" in p.note and "nvidia-tesla-a100" in p.note


@pytest.mark.parametrize("knob, why", [
    ("refuse", "it refused (403"),
    ("fail_status", "it answered 503"),
    ("slow", "it did not answer in time"),
])
def test_when_the_catalog_refuses_or_fails_the_table_stands_in(billing, knob: str, why: str) -> None:
    if knob == "refuse":
        billing.refuse = True
    elif knob == "fail_status":
        billing.fail_status = 503
    else:
        billing.delay_s = 2.0
    book = PriceBook(fetch=lambda regions: catalog.fetch(regions, timeout_s=0.5))
    p = book.price(L4_SPEC, "SPOT")
    assert p.source == "table" and p.usd_per_hour == pytest.approx(table_price(L4_SPEC, "SPOT"), abs=1e-5)
    assert len(book.notes) == 1 and why in book.notes[0] and "using the table of" in book.notes[0]
    calls = billing.calls["services.skus.list"]
    PriceBook().price(T4_SPEC, "STANDARD")  # the failure is kept: a refusing catalog is asked once per run
    assert billing.calls["services.skus.list"] == calls == 1


def test_an_unreachable_catalog_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog.forget()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(catalog.EMULATOR_ENV, f"127.0.0.1:{port}")
    book = PriceBook()
    assert book.price(L4_SPEC, "STANDARD").source == "table"
    assert "it cannot be reached" in book.notes[0]
    catalog.forget()


def test_without_credentials_the_catalog_is_not_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    catalog.forget()
    for var in (catalog.EMULATOR_ENV, catalog.SWITCH_ENV, "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default credentials
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # and not on Compute Engine
    import google.auth.compute_engine._metadata as md
    monkeypatch.setattr(md, "_NO_GCE_CHECK", True)
    book = PriceBook()
    assert book.price(L4_SPEC, "STANDARD").source == "table"
    assert "no Google credentials" in book.notes[0]
    catalog.forget()


def test_the_switch_turns_the_catalog_off(no_catalog) -> None:
    book = PriceBook()
    assert book.price(L4_SPEC, "STANDARD").source == "table"
    assert f"turned off ({catalog.SWITCH_ENV}=0)" in book.notes[0]


def test_the_stand_in_speaks_and_checks_the_published_shape(billing) -> None:
    url = f"{billing.url}/v1/services/{COMPUTE_SERVICE_ID}/skus"
    page = requests.get(url, params={"pageSize": 2}, timeout=10).json()
    assert not problems(billing_validator("ListSkusResponse"), page)
    assert len(page["skus"]) == 2 and page["nextPageToken"]
    # what the published description rejects
    assert requests.get(url, params={"pageSize": "many"}, timeout=10).status_code == 400
    assert requests.get(url, params={"filter": "GPU"}, timeout=10).status_code == 400
    assert requests.get(url, params={"startTime": "yesterday"}, timeout=10).status_code == 400
    assert len(billing.rejected) == 3
    # and the validator is strict: a SKU off the published shape fails it
    bad = sku("X", "N1 Predefined Instance Core running in Americas", family="Compute", group="CPU",
              usage="OnDemand", regions=["us-central1"], usd=0.03, unit="h", unit_text="hour")
    bad["pricingInfo"][0]["pricingExpression"]["tieredRates"][0]["unitPrice"]["units"] = "0.03"
    bad["pricingInfo"][0]["effectiveTime"] = "2026-11-30"
    bad["price"] = 1
    found = " ".join(problems(billing_validator("ListSkusResponse"), {"skus": [bad]}))
    assert "units" in found and "effectiveTime" in found and "'price' was unexpected" in found


# --------------------------------------------------------------------------- the plan

MATRIX = """\
version: 1
gce: {region: us-central1}
machines:
  l4: {machine_type: g2-standard-8, zones: [a], spot: preferred, max_run_duration: 3h}
  t4: {machine_type: n1-standard-8, accelerator: {type: nvidia-tesla-t4}, zones: [a], spot: only,
       disk: {size_gb: 200, type: pd-standard}}
  own: {machine_type: g2-standard-8, zones: [a], price_per_hour: 10, max_run_duration: 30m}
  odd: {machine_type: n2d-standard-4, zones: [a]}
  here: {provider: local}
runtimes:
  r: {notebooks: [a.ipynb]}
"""


def _matrix(tmp_path: Path, text: str = MATRIX) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    m = tmp_path / "m.yml"
    m.write_text(text)
    return m


def test_the_plan_prices_each_entry_and_the_runs_worst_case(no_catalog, tmp_path: Path) -> None:
    p = plan.plan(_matrix(tmp_path), env={})
    cost = plan.price_entries(p)
    l4 = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "us-central1")
    t4 = Shape("n1-standard-8", "nvidia-tesla-t4", 1, "pd-standard", 200, "us-central1")
    # a Spot entry may be preempted at the end of its first try and retried once (retries.preempted,
    # default 1): on STANDARD when spot is preferred, on SPOT again when spot is all it may use
    assert cost.worst_case["r--l4"] == pytest.approx(3 * table_price(l4, "STANDARD") + 3 * table_price(l4, "SPOT"),
                                                     abs=1e-3)
    assert cost.worst_case["r--t4"] == pytest.approx(2 * 2 * table_price(t4, "SPOT"), abs=1e-3)  # default 2h
    # a GPU machine without a spot policy prefers SPOT: a preempted try and its retry, $10 an hour either way
    assert p.entries[2].gce.provisioning_models == ["SPOT", "STANDARD"]
    assert cost.worst_case["r--own"] == pytest.approx(2 * 10 * 0.5)
    assert cost.worst_case["r--odd"] is None and cost.unknown == ["r--odd"]
    assert "r--here" not in cost.worst_case
    assert cost.worst_case_usd == pytest.approx(sum(v for v in cost.worst_case.values() if v), abs=0.01)
    line = cost.line()
    assert money(cost.worst_case_usd) in line and "estimate" in line and "no price for r--odd" in line
    assert "the matrix's price_per_hour" in line and f"gpu-runner's price table of {table()['as_of']}" in line
    assert any("r--odd" in n and "price_per_hour" in n for n in cost.notes)


def test_cli_plan_json_items_carry_their_price(no_catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(_matrix(tmp_path)), "--format", "json"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    items = {i["id"]: i for i in json.loads(captured.out)["include"]}
    l4 = items["r--l4"]["price"]
    assert set(l4) == {"SPOT", "STANDARD", "worst_case_usd"}
    assert l4["SPOT"]["source"] == "table" and l4["SPOT"]["as_of"] == table()["as_of"]
    assert l4["SPOT"]["usd_per_hour"] < l4["STANDARD"]["usd_per_hour"]
    assert set(items["r--t4"]["price"]) == {"SPOT", "worst_case_usd"}  # spot: only
    assert items["r--own"]["price"]["STANDARD"] == {"usd_per_hour": 10.0, "source": "matrix", "as_of": None}
    assert items["r--here"]["price"] is None
    assert len(json.dumps(items["r--l4"]["price"], separators=(",", ":"))) < 200  # a GitHub matrix item stays small
    assert "worst case: $" in captured.err and "estimate" in captured.err
    md = summary.read_text()
    assert "### What this run may cost" in md and "| r--l4 | g2-standard-8 |" in md and "**Worst case: $" in md


def test_cli_plan_table_shows_prices_from_the_catalog(billing, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(_matrix(tmp_path)), "--format", "table"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    l4 = Shape("g2-standard-8", "nvidia-l4", 1, "pd-balanced", 100, "us-central1")
    assert money(catalog_price(l4, "SPOT")) + " spot" in out and "worst case" in out
    assert f"Cloud Billing Catalog, {AS_OF}" in " ".join(out.split())
