"""Reads jobq's configurations through the real Keboola Storage API Python client (kbcstorage).

Usage: python3 tests/kbcstorage_check.py <base url> <token> [component] [configuration id]

tests/storage_api.rs runs it against a daemon where it made configuration `kbc-check` (name
"Checked by kbcstorage", parameters {"greeting": "hi"}, one row named "first row") of component
keboola.ex-fixture, with the Python of a virtual environment under the target folder that holds
the kbcstorage release pinned in tests/common/python.rs. The check lists components and
configurations, reads the detail, then creates, reads and deletes a configuration through the
client. Exit 0 when every value read is the expected one; a failed assertion or HTTP error exits
non-zero.
"""

import sys

try:
    from kbcstorage.components import Components
    from kbcstorage.configurations import Configurations
except ImportError:
    sys.exit(
        "kbcstorage is not installed: run this with the environment tests/storage_api.rs makes, "
        "or python3 -m pip install kbcstorage"
    )


def main():
    url, token = sys.argv[1], sys.argv[2]
    component = sys.argv[3] if len(sys.argv) > 3 else "keboola.ex-fixture"
    config_id = sys.argv[4] if len(sys.argv) > 4 else "kbc-check"

    components = Components(url, token, "default")
    configurations = Configurations(url, token, "default")
    for endpoint in (components, configurations):
        # The client retries 5xx answers for minutes; a jobq bug should fail the check at once.
        endpoint.requests.max_retries = 1

    listed = components.list(include=["configuration", "rows"])
    by_id = {c["id"]: c for c in listed}
    assert component in by_id, f"{component} not in {sorted(by_id)}"
    summary = {c["id"]: c for c in by_id[component]["configurations"]}
    assert config_id in summary, f"{config_id} not in {sorted(summary)}"
    assert summary[config_id]["configuration"] == {"parameters": {"greeting": "hi"}}, summary
    assert [r["name"] for r in summary[config_id]["rows"]] == ["first row"], summary

    plain = {c["id"]: c for c in components.list()}
    assert "configuration" not in plain[component]["configurations"][0], plain

    found = configurations.list(component)
    assert config_id in [c["id"] for c in found], found

    detail = configurations.detail(component, config_id)
    assert detail["id"] == config_id, detail
    assert detail["name"] == "Checked by kbcstorage", detail
    assert detail["version"] == 2, detail
    assert detail["isDisabled"] is False, detail
    assert detail["configuration"]["parameters"]["greeting"] == "hi", detail
    assert detail["rows"][0]["name"] == "first row", detail
    assert detail["state"] == {}, detail

    created = configurations.create(
        component,
        "Made by kbcstorage",
        description="from Python",
        configuration={"parameters": {"n": 1}},
        change_description="created by the check",
    )
    assert created["version"] == 1, created
    again = configurations.detail(component, created["id"])
    assert again["configuration"] == {"parameters": {"n": 1}}, again
    assert again["description"] == "from Python", again
    configurations.delete(component, created["id"])
    remaining = [c["id"] for c in configurations.list(component)]
    assert created["id"] not in remaining, remaining
    print(f"kbcstorage read and wrote {component} configurations at {url}")


if __name__ == "__main__":
    main()
