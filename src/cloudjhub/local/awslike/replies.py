"""Reading and rewriting EC2 Query API replies (XML), and writing its errors.

Kept to what the layer changes: instance states, hypervisors, console output.
Everything else in a reply passes through as the endpoint wrote it.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection

from .lifecycle import STATE_CODES


def _ns(root: ET.Element) -> str:
    return root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - replies of our own loopback endpoint


def _dump(root: ET.Element) -> bytes:
    ns = _ns(root)
    if ns:
        ET.register_namespace("", ns[1:-1])
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def error(code: str, message: str) -> bytes:
    """An EC2 error reply body (the Query API's <Response><Errors> form)."""
    root = ET.Element("Response")
    errors = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
    ET.SubElement(errors, "Code").text = code
    ET.SubElement(errors, "Message").text = message
    ET.SubElement(root, "RequestID").text = str(uuid.uuid4())
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _instance_items(root: ET.Element) -> list[ET.Element]:
    ns = _ns(root)
    return [
        item
        for item in root.iter(f"{ns}item")
        if item.find(f"{ns}instanceId") is not None
        and (
            item.find(f"{ns}instanceState") is not None
            or item.find(f"{ns}currentState") is not None
        )
    ]


def instance_ids(body: bytes) -> list[str]:
    """Instance ids of a RunInstances/Describe/Start/Stop/Terminate reply."""
    root = _parse(body)
    ns = _ns(root)
    return [str(item.findtext(f"{ns}instanceId")) for item in _instance_items(root)]


def _set_state(state_el: ET.Element, ns: str, name: str) -> None:
    code = state_el.find(f"{ns}code")
    if code is not None:
        code.text = str(STATE_CODES[name])
    name_el = state_el.find(f"{ns}name")
    if name_el is not None:
        name_el.text = name


def rewrite_states(
    body: bytes,
    visible: Callable[[str, str], str],
    only: Collection[str] | None = None,
) -> bytes:
    """Each instance's state as AWS would show it; with `only` (a state filter of the
    request), instances whose shown state is not asked for are left out."""
    root = _parse(body)
    ns = _ns(root)
    parents = {child: parent for parent in root.iter() for child in parent}
    for item in _instance_items(root):
        instance_id = str(item.findtext(f"{ns}instanceId"))
        state_el = item.find(f"{ns}instanceState")
        if state_el is None:
            state_el = item.find(f"{ns}currentState")
        assert state_el is not None
        actual = str(state_el.findtext(f"{ns}name"))
        shown = visible(instance_id, actual)
        if shown != actual:
            _set_state(state_el, ns, shown)
        if only is not None and shown not in only:
            parents[item].remove(item)
        elif shown == "terminated":
            # A terminated instance has released its network interface and address.
            for tag in ("privateIpAddress", "privateDnsName", "networkInterfaceSet"):
                el = item.find(f"{ns}{tag}")
                if el is not None:
                    item.remove(el)
    if only is not None:
        _drop_empty_reservations(root, ns)
    return _dump(root)


def _drop_empty_reservations(root: ET.Element, ns: str) -> None:
    reservations = root.find(f"{ns}reservationSet")
    if reservations is None:
        return
    for reservation in list(reservations):
        instances = reservation.find(f"{ns}instancesSet")
        if instances is not None and len(instances) == 0:
            reservations.remove(reservation)


def rewrite_hypervisors(body: bytes, hypervisor: Callable[[str], str]) -> bytes:
    """DescribeInstanceTypes with each type's real hypervisor (moto says xen for all)."""
    root = _parse(body)
    ns = _ns(root)
    for item in root.iter(f"{ns}item"):
        type_name = item.findtext(f"{ns}instanceType")
        el = item.find(f"{ns}hypervisor")
        if type_name and el is not None:
            el.text = hypervisor(type_name)
    return _dump(root)


def with_console_output(body: bytes, text: str) -> bytes:
    """A GetConsoleOutput reply whose output is `text` (absent when empty, as AWS)."""
    root = _parse(body)
    ns = _ns(root)
    el = root.find(f"{ns}output")
    if el is None:
        el = ET.SubElement(root, f"{ns}output")
    if text:
        el.text = base64.b64encode(text.encode()).decode()
    else:
        root.remove(el)
    return _dump(root)


def changed_ids(body: bytes, unchanged_from: Collection[str]) -> list[str]:
    """Ids in a Start/Stop/TerminateInstances reply whose state the call changed:
    those whose previous state is not in `unchanged_from` (already there)."""
    root = _parse(body)
    ns = _ns(root)
    return [
        str(item.findtext(f"{ns}instanceId"))
        for item in _instance_items(root)
        if item.findtext(f"{ns}previousState/{ns}name") not in unchanged_from
    ]
