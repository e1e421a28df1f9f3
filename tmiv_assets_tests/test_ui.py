"""The Dagster UI as people use it: `dagster dev` on loopback, driven by Debian's Chromium through Playwright, and
the same server through the dagster-graphql client. Screenshots land in test-artifacts/ui/."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright

from tmiv_assets.defs.launch import workspace_location
from tmiv_assets_tests.conftest import DATA_DIR, PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "ui"
LOCATION = workspace_location()[1]
SERVER_START_S = 240
RUN_TIMEOUT_S = 420


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


LOCATION_STATUS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """`dagster dev` (webserver, daemon, code server) on a free loopback port over a fresh state directory with
    the titanic and air_passengers partitions registered; every process is stopped by its process group."""
    assert CHROMIUM, "Debian's chromium is needed for the browser test: apt-get install chromium (.ci/run does)"
    home = tmp_path_factory.mktemp("ui") / "tmiv"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_"))} | {
        "TMIV_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "TMIV_DATA_DIR": str(DATA_DIR),
        "TMIV_AUTOMATION": "off",  # only the runs this test launches
        "PATH": f"{BIN}:{os.environ['PATH']}"}
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_HOME", str(dagster_home))  # dagster.yaml reads it, here as in the server
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("dataset", ["titanic"])
        instance.add_dynamic_partitions("series", ["air_passengers"])
    port = free_port()
    log = home / "dagster_dev.log"
    # From DAGSTER_HOME, as `make ui` starts it.
    server = subprocess.Popen([str(BIN / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                               "-h", "127.0.0.1", "-p", str(port)], cwd=dagster_home, env=environment,
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                entries = graphql(url, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"dagster dev did not load in {SERVER_START_S}s\n{log.read_text()}"
            time.sleep(2)
        assert "will not be used" not in log.read_text()  # the instance file in DAGSTER_HOME is the one read
        yield {"url": url, "port": port, "home": home, "dagster_home": dagster_home}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        patch.undo()


def finished_run(dagster_home: Path, predicate) -> dg.DagsterRun:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            done = [r for r in instance.get_runs() if predicate(r) and r.is_finished]
        if done:
            return done[0]
        time.sleep(3)
    raise AssertionError(f"no run finished within {RUN_TIMEOUT_S}s")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_the_ui_shows_the_graph_and_materializes_a_partition(dagster_dev):
    url = dagster_dev["url"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/asset-groups")
            page.get_by_role("button", name="Skip").click()  # a fresh browser is first asked to join the community
            for group in ("datasets", "features", "models", "deployment", "explanations", "monitoring", "forecasts"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            shot(page, "asset_graph")

            page.goto(f"{url}/locations/{LOCATION}/asset-groups/datasets")
            page.get_by_role("button", name="Materialize all").click()
            page.get_by_role("button", name="All", exact=True).click()  # every partition: the one, titanic
            launch = page.get_by_role("button", name=re.compile(r"^Launch (1 run|backfill)$"))
            expect(launch).to_be_enabled()
            shot(page, "launch_dialog")
            launch.click()
            run = finished_run(dagster_dev["dagster_home"], lambda r: r.tags.get("dagster/partition") == "titanic")
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.remote_job_origin.location_name == LOCATION

            page.goto(f"{url}/runs/{run.run_id}")
            expect(page.get_by_text("Success").first).to_be_visible()
            shot(page, "run")

            page.goto(f"{url}/assets/dataset_profile?partition=titanic")
            page.get_by_text("[Show Markdown]").first.click()
            plot = page.locator("img[src^='data:image/png']").first
            expect(plot).to_be_visible()
            width = plot.evaluate("image => image.complete ? image.naturalWidth : 0")
            assert width > 100, "the profile's plot did not render"
            shot(page, "metadata_plot")
        finally:
            browser.close()


def test_graphql_client_launches_a_partition_and_reads_its_metadata(dagster_dev):
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev["port"])
    run_id = client.submit_job_execution("forecast_series", repository_location_name=LOCATION,
                                         repository_name="__repository__",
                                         tags={"dagster/partition": "air_passengers"})
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (status := client.get_run_status(run_id)) not in (dg.DagsterRunStatus.SUCCESS,
                                                             dg.DagsterRunStatus.FAILURE):
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(3)
    assert status == dg.DagsterRunStatus.SUCCESS
    query = """query ($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
        assetMaterializations(limit: 1, partitions: ["air_passengers"]) { runId partition
          metadataEntries { label ... on TextMetadataEntry { text } } } } } }"""
    [materialization] = graphql(dagster_dev["url"], query, {"key": {"path": ["forecast"]}})["assetOrError"][
        "assetMaterializations"]
    assert (materialization["runId"], materialization["partition"]) == (run_id, "air_passengers")
    entries = {e["label"]: e for e in materialization["metadataEntries"]}
    assert entries["chosen_model"]["text"]
    assert (dagster_dev["home"] / "forecasts" / "air_passengers.parquet").exists()
