"""EC2 filter values matched as AWS documents them, in place of moto's matching.

AWS (DescribeInstances and every Describe call's `Filter.N.Value`): `*` matches
zero or more characters, `?` exactly one, and a backslash makes the next
character literal ("\\*amazon\\?\\\\" searches for the literal string `*amazon?\\`).
Nothing else is special. moto translates values with `fnmatch`, where `[...]`
is a character class and a backslash escapes nothing, and for some resources
(volumes) consults only the first value. A name with `[` or `\\` in it would match
differently here than on AWS, so the local cloud matches as AWS does.

A resource's own tags are also read straight from moto's tag store: moto finds
them by scanning every tag of every resource (DescribeTags with a resource-id
filter), so a tag-filtered DescribeInstances over N instances cost N x all tags,
seconds per call with a storm's hundreds of instances (and the scan failed with
"dictionary changed size" when another request tagged meanwhile).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any


def aws_filter_regex(filter_string: str) -> str:
    """A regular expression matching exactly what the AWS filter value matches."""
    out: list[str] = []
    chars = iter(filter_string)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "(?s:" + "".join(out) + r")\Z"


def matches(text: str, value: str) -> bool:
    return re.match(aws_filter_regex(value), text) is not None


def install() -> None:
    """Make this process's moto match filter values as AWS does (idempotent)."""
    from moto.ec2 import utils
    from moto.ec2.models import core, security_groups, tags

    def get_tags(resource: Any) -> list[dict[str, str]]:
        rid = getattr(resource, "id", None)
        if not rid:
            return []
        own = dict(resource.ec2_backend.tags.get(rid, {}))  # a copy: others may tag now
        kind = tags.EC2_PREFIX_TO_RESOURCE.get(tags.get_prefix(rid), "")
        return [
            {"resource_id": rid, "key": k, "value": v, "resource_type": kind}
            for k, v in own.items()
        ]

    def tag_filter_matches(obj: Any, filter_name: str, filter_values: list[str]) -> bool:
        # moto's own also accepts a tag equal to the filter value as written, so
        # `a\*` would match a tag `a\*`; on AWS it matches only `a*`.
        if filter_name == "tag-key":
            values = utils.get_obj_tag_names(obj)
        elif filter_name == "tag-value":
            values = utils.get_obj_tag_values(obj)
        elif filter_name.startswith("tag:"):
            values = utils.get_obj_tag_values(obj, key=filter_name[4:])
        else:
            values = {utils.get_obj_tag(obj, filter_name) or ""}
        return any(matches(v, f) for v in values for f in filter_values)

    core.TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign,assignment]
    utils.simple_aws_filter_to_re = aws_filter_regex
    tags.simple_aws_filter_to_re = aws_filter_regex
    utils.tag_filter_matches = tag_filter_matches
    security_groups.tag_filter_matches = tag_filter_matches
    # moto's generic filters call fnmatch.fnmatch(value, pattern) through this name.
    utils.fnmatch = SimpleNamespace(fnmatch=matches)  # type: ignore[assignment]
