"""ModelServing → :class:`~ferry_schemas.bus.ServingWorkload` (``spec/serving.md`` §2-§3).

Which group ordinals exist is the applier's decision, so the desired set carries one blueprint
and the replica count; :func:`ferry_schemas.workload.render_group` renders an ordinal.
"""

from __future__ import annotations

from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ConversionError, ServingWorkload
from ferry_schemas.workload import blueprint, plugin_errors, serving_revision

from ferry_converter.errors import ConversionFailure
from ferry_converter.values import int_or

MANAGED_KINDS = ["PodGroup", "Pod", "Service"]


def name_errors(name: str, spec: dict[str, Any]) -> list[ConversionError]:
    """Kthena's generated-name rule: ``<ms>-<replicas>-<role>-<roleReplicas>-<workers>`` is a DNS-1035 label.

    That string is at least as long as every Pod/Service name a group renders (``<ms>-<g>-<role>-<r>-<p>``
    with ordinals below the counts), so passing it means every generated name is valid.
    """
    errors: list[ConversionError] = []
    roles = ((spec.get("template") or {}).get("roles")) or []
    replicas = int_or(spec.get("replicas"), 1)
    for index, role in enumerate(roles):
        role_name = str(role.get("name") or "")
        if not L.is_dns1035_label(role_name):
            errors.append(
                ConversionError(
                    field=f"spec.template.roles[{index}].name",
                    message=f'role name "{role_name}" must be a valid DNS-1035 label (lower-case letters, '
                    "digits and '-', starting with a letter)",
                )
            )
            continue
        role_replicas = int_or(role.get("replicas"), 1)
        workers = int_or(role.get("workerReplicas"), 0)
        generated = f"{name}-{replicas}-{role_name}-{role_replicas}-{workers}"
        if not L.is_dns1035_label(generated):
            detail = (
                f"must be no more than {L.DNS1123_LABEL_MAX} characters; "
                "shorten the ModelServing or role name"
                if len(generated) > L.DNS1123_LABEL_MAX
                else "must be a DNS-1035 label (start with a letter, only lower-case letters, "
                "digits and '-'); rename the ModelServing"
            )
            errors.append(
                ConversionError(
                    field="metadata.name",
                    message=f'invalid name: generated pod/service name "{generated}" {detail}',
                )
            )
    return errors


def convert_serving(obj: dict[str, Any]) -> tuple[ServingWorkload | None, list[ConversionError]]:
    """The workload of one ModelServing, or the reasons it cannot be rendered."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        return None, [ConversionFailure("spec.template", "a ModelServing needs spec.template").to_error()]
    roles = spec["template"].get("roles")
    if not isinstance(roles, list) or not roles:
        return None, [ConversionFailure("spec.template.roles", "roles must be specified").to_error()]
    errors = name_errors(str(meta.get("name") or ""), spec)
    errors += [
        ConversionError(field=field, message=message) for field, message in plugin_errors(spec.get("plugins"))
    ]
    if errors:
        return None, errors
    bp = blueprint(obj)
    return ServingWorkload(
        replicas=int_or(spec.get("replicas"), 1),
        revision=serving_revision(bp["template"].get("roles") or []),
        blueprint=bp,
    ), []


def owner_selector(name: str) -> dict[str, str]:
    return {L.MS_NAME: name}
