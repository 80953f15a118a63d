#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Part of hostpolicyd's Ansible role: `hostpolicyd plan` as a task, for check mode.

from __future__ import annotations

DOCUMENTATION = r"""
module: hostpolicyd_plan
short_description: What a change of hostpolicyd configuration does to the node's traffic
description:
  - Runs C(hostpolicyd plan --against OLD) on a directory holding the configuration as it would be
    written, and reports C(changed) exactly when resources or packet verdicts change.
  - In diff mode the plan (resources, ruleset changes, and the regions of packet space whose verdict
    changes, per interface) is the task's diff.
  - Fails like C(hostpolicyd check) when the new configuration is invalid or would lock out a
    ManagementAccess flow.
  - Reads only; supports check mode.
options:
  binary:
    description: The hostpolicyd program (installed, or unpacked from the package on a fresh node).
    type: str
    default: hostpolicyd
  config_dir:
    description: The new configuration (the rendered files).
    type: path
    required: true
  against:
    description: The configuration in force (normally /etc/hostpolicy.d; an empty directory on a fresh node).
    type: path
    required: true
  node_name:
    description: The node to plan (HostEndpoints name it in spec.node).
    type: str
    required: true
"""

RETURN = r"""
plan:
  description: The plan as C(hostpolicyd plan --json) prints it (nodes, resources, verdict_changes, ...).
  returned: success
  type: dict
verdict_changes:
  description: How many regions of packet space change verdict.
  returned: success
  type: int
"""

import json

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="str", default="hostpolicyd"),
            config_dir=dict(type="path", required=True),
            against=dict(type="path", required=True),
            node_name=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    base = [
        p["binary"],
        "--config-dir",
        p["config_dir"],
        "--node-name",
        p["node_name"],
        "plan",
        "--against",
        p["against"],
    ]
    rc, text, err = module.run_command(base)
    if rc != 0:
        module.fail_json(
            msg="hostpolicyd plan refused the new configuration (exit %d): %s"
            % (rc, (err or text).strip()),
            rc=rc,
            stdout=text,
            stderr=err,
        )
    rc, out, err = module.run_command(base + ["--json"])
    if rc != 0:
        module.fail_json(msg="hostpolicyd plan --json failed: %s" % err.strip(), rc=rc)
    plan = json.loads(out)
    resources = plan.get("resources", {})
    changed = bool(plan.get("verdict_changes")) or any(
        resources.get(k) for k in ("added", "removed", "changed")
    )
    regions = len(plan.get("verdict_changes", []))
    result = dict(
        changed=changed,
        plan=plan,
        verdict_changes=regions,
        msg="%d region%s of packet space change verdict" % (regions, "" if regions == 1 else "s")
        if regions
        else "no verdict changes",
    )
    if module._diff:
        result["diff"] = dict(prepared=text)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
