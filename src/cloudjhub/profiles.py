"""Profiles: `c.InstanceSpawner.profile_list`, kubespawner's shape and meaning.

A profile names a machine (type, disks, image, market, tags); its
`profile_options` let a user pick among the admin's choices, or type a value
of their own (`unlisted_choice`) that must match a regex and is put where the
override says `{value}`. The model is declared once here; a user's
`user_options` are checked against it before anything is launched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .config import MAX_FILE_BYTES, TAG_CHARS, TagKey, TagValue, error_line, parse_json

# What a profile may change; everything else stays the cluster's.
OVERRIDABLE = (
    "worker_instance_type",
    "worker_ebs_size",
    "user_home_ebs_size",
    "worker_ami",
    "hibernate",
    "idle_timeout",
    "market",
    "extra_tags",
)
MARKETS = ("on-demand", "spot")
# The confirmation a user gives to replace an instance AWS cannot change in place.
REPLACE_OPTION = "replace_instance"
UNLISTED_SUFFIX = "--unlisted-choice"
# What the options form sends when a user picks "Other" for an option.
UNLISTED_CHOICE = "unlisted_choice"
MAX_SLUG = 63
MAX_UNLISTED = 255
# A validation_regex runs on the hub's event loop for every unlisted value a user
# sends; Python's re cannot be interrupted (it backtracks holding the GIL), so a
# pattern with nested repeats could stall the hub. The `regex` package's matcher
# gives up after this many seconds, and the value is refused.
REGEX_TIMEOUT = 0.2

Slug = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9_-]{0,62})$")]
OptionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_]{1,40}$")]


class ProfileError(ValueError):
    """user_options that no profile allows; the message names the option and what
    is allowed, and becomes an HTTP 400."""


class Override(BaseModel):
    """What one profile or choice changes, checked like the traits it sets."""

    model_config = ConfigDict(extra="forbid")

    worker_instance_type: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,20}\.[a-z0-9-]{1,20}$")] = ""
    worker_ebs_size: Annotated[int, Field(ge=8, le=16384)] | None = None
    user_home_ebs_size: Annotated[int, Field(ge=0, le=16384)] | None = None
    worker_ami: Annotated[str, Field(pattern=r"^ami-[0-9a-f]{8,17}$")] = ""
    hibernate: StrictBool | None = None
    idle_timeout: Annotated[int, Field(ge=0)] | None = None
    market: Literal["on-demand", "spot"] | None = None
    extra_tags: dict[TagKey, TagValue] | None = None

    def given(self) -> dict[str, Any]:
        """Only what this override sets."""
        return {k: v for k, v in self.model_dump().items() if v not in ("", None)}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Model):
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    default: StrictBool = False
    spawner_override: Override = Field(default_factory=Override)


class UnlistedChoice(_Model):
    enabled: StrictBool = False
    display_name: Annotated[str, Field(max_length=200)] = ""
    display_name_in_choices: Annotated[str, Field(max_length=200)] = "Other..."
    validation_regex: str = ""
    validation_message: Annotated[str, Field(max_length=300)] = ""
    # Values are templates ("{value}"), checked as an Override once filled in.
    spawner_override: dict[str, Any] = Field(default_factory=dict)

    @field_validator("validation_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            regex.compile(value)
        except regex.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @field_validator("spawner_override")
    @classmethod
    def _overridable(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in OVERRIDABLE:
                raise ValueError(f"{key} cannot be overridden; allowed: {', '.join(OVERRIDABLE)}")
        return value


class ProfileOption(_Model):
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    choices: dict[Slug, Choice] = Field(default_factory=dict)
    unlisted_choice: UnlistedChoice = Field(default_factory=UnlistedChoice)

    @model_validator(mode="after")
    def _something_to_pick(self) -> ProfileOption:
        if not self.choices and not self.unlisted_choice.enabled:
            raise ValueError("has no choices and no enabled unlisted_choice")
        return self

    def default_choice(self) -> str | None:
        for key, choice in self.choices.items():
            if choice.default:
                return key
        return next(iter(self.choices), None)


class Profile(_Model):
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    slug: Slug | None = None
    description: Annotated[str, Field(max_length=2000)] = ""
    default: StrictBool = False
    spawner_override: Override = Field(default_factory=Override)
    profile_options: dict[OptionName, ProfileOption] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _slug(self) -> Profile:
        if self.slug is None:
            # kubespawner's rule: a missing slug comes from the display name.
            made = re.sub(r"[^a-z0-9]+", "-", self.display_name.lower()).strip("-")[:MAX_SLUG]
            self.slug = made or "profile"
        return self

    @property
    def key(self) -> str:
        assert self.slug is not None
        return self.slug


_PROFILES = TypeAdapter(list[Profile])


def fill(template: dict[str, Any], value: str) -> dict[str, Any]:
    """An unlisted choice's override with every "{value}" replaced by the user's value."""

    def sub(item: Any) -> Any:
        if isinstance(item, str):
            return item.replace("{value}", value)
        if isinstance(item, dict):
            return {k: sub(v) for k, v in item.items()}
        return item

    return {k: sub(v) for k, v in template.items()}


def _where(raw: Any, loc: tuple[Any, ...]) -> str:
    """'profile <slug or name or index>' for the first element of an error's location."""
    if not loc or not isinstance(loc[0], int):
        return "profile_list"
    index = loc[0]
    item = raw[index] if isinstance(raw, list) and index < len(raw) else None
    name = ""
    if isinstance(item, dict):
        name = str(item.get("slug") or item.get("display_name") or "")[:60]
    return (
        f"profile_list: profile {name!r} (#{index + 1})" if name else f"profile_list: #{index + 1}"
    )


def parse(raw: Any) -> list[Profile]:
    """The admin's profile_list as models; ValueError with one line naming the profile
    and the field."""
    try:
        profiles = _PROFILES.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        fieldname = ".".join(str(p) for p in loc[1:]) or "(the profile)"
        why = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"{_where(raw, loc)}: field {fieldname}: {why}") from None
    seen: set[str] = set()
    for index, profile in enumerate(profiles):
        if profile.key in seen:
            where = _where(raw, (index,))
            raise ValueError(f"{where}: field slug: {profile.key!r} is used by another profile")
        seen.add(profile.key)
    return profiles


def default_profile(profiles: list[Profile]) -> Profile:
    for profile in profiles:
        if profile.default:
            return profile
    return profiles[0]


@dataclass
class Selection:
    """A user's pick: the profile, each option's choice, and what they override."""

    profile: Profile
    choices: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    replace_instance: bool = False

    def user_options(self) -> dict[str, Any]:
        """What to keep so a later start without options picks the same again."""
        kept: dict[str, Any] = {"profile": self.profile.key, **self.choices}
        return kept


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"option {name!r} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise ProfileError(f"option {name!r} is longer than {limit} characters")
    return value


def _allowed(items: Any) -> str:
    listed = [repr(i) for i in items]
    return ", ".join(listed[:20]) + (", ..." if len(listed) > 20 else "")


def select(profiles: list[Profile], user_options: Any) -> Selection:
    """Check `user_options` ({"profile": slug, "<option>": "<choice>", ...}) against the
    profiles; ProfileError names the first option that is not allowed."""
    if not isinstance(user_options, dict):
        raise ProfileError("user_options must be an object")
    options = dict(user_options)
    if "profile" in options:
        slug = _text("profile", options.pop("profile"), MAX_SLUG)
        found = [p for p in profiles if p.key == slug]
        if not found:
            raise ProfileError(
                f"option 'profile': no profile {slug!r}; allowed: {_allowed(p.key for p in profiles)}"
            )
        profile = found[0]
    else:
        profile = default_profile(profiles)
    replace = options.pop(REPLACE_OPTION, False)
    if not isinstance(replace, bool):
        raise ProfileError(f"option {REPLACE_OPTION!r} must be true or false")
    selection = Selection(profile, replace_instance=replace)
    overrides = profile.spawner_override.given()
    for name, option in profile.profile_options.items():
        picked, typed = options.pop(name, None), options.pop(name + UNLISTED_SUFFIX, None)
        if picked is not None:
            picked = _text(name, picked, MAX_SLUG)
        if typed is not None or picked == UNLISTED_CHOICE:
            value = _unlisted(name, option, typed)
            filled = fill(option.unlisted_choice.spawner_override, value)
            try:
                overrides.update(Override.model_validate(filled).given())
            except ValidationError as exc:
                raise ProfileError(
                    f"option {name!r}: {value!r} is not allowed ({error_line(exc)})"
                ) from None
            selection.choices[name + UNLISTED_SUFFIX] = value
            continue
        if picked is None:
            picked = option.default_choice()
            if picked is None:  # only an unlisted choice, and the user gave none
                raise ProfileError(f"option {name!r}: a value is required")
        if picked not in option.choices:
            raise ProfileError(
                f"option {name!r}: no choice {picked!r}; allowed: {_allowed(option.choices)}"
            )
        overrides.update(option.choices[picked].spawner_override.given())
        selection.choices[name] = picked
    if options:
        unknown = sorted(str(k)[:40] for k in options)[0]
        allowed = ["profile", REPLACE_OPTION, *profile.profile_options]
        raise ProfileError(
            f"option {unknown!r} is not an option of profile {profile.key!r}; "
            f"allowed: {_allowed(allowed)}"
        )
    selection.overrides = overrides
    return selection


def _unlisted(name: str, option: ProfileOption, typed: Any) -> str:
    unlisted = option.unlisted_choice
    if not unlisted.enabled:
        raise ProfileError(f"option {name!r} takes only its choices: {_allowed(option.choices)}")
    if typed is None:
        raise ProfileError(f"option {name!r}: no value given for {name + UNLISTED_SUFFIX!r}")
    value = _text(name, typed, MAX_UNLISTED)
    pattern = unlisted.validation_regex
    try:
        matched = not pattern or regex.fullmatch(pattern, value, timeout=REGEX_TIMEOUT)
    except TimeoutError:
        raise ProfileError(
            f"option {name!r}: the value could not be checked against {pattern} in time; "
            "send a shorter or simpler one"
        ) from None
    if not matched:
        hint = unlisted.validation_message or f"must match {unlisted.validation_regex}"
        raise ProfileError(f"option {name!r}: {value!r} is not allowed: {hint}")
    return value


def from_form(form_data: dict[str, list[str]]) -> dict[str, Any]:
    """The options form's fields as user_options: only the picked profile's options,
    named as in the REST API (kubespawner's form field names)."""
    options: dict[str, Any] = {}
    slug = (form_data.get("profile") or [""])[0]
    if slug:
        options["profile"] = slug
    prefix = f"profile-option-{slug}--"
    for key, values in form_data.items():
        if key.startswith(prefix) and values:
            options[key[len(prefix) :]] = values[0]
    for key in list(options):
        # A typed value counts only when "Other" is picked for its option.
        if key.endswith(UNLISTED_SUFFIX):
            base = key[: -len(UNLISTED_SUFFIX)]
            if options.get(base) != UNLISTED_CHOICE:
                del options[key]
            else:
                del options[base]
    if form_data.get(REPLACE_OPTION, [""])[0] in ("on", "true"):
        options[REPLACE_OPTION] = True
    return options


def load_file(path: Path) -> list[dict[str, Any]]:
    """A `--profiles FILE` (YAML or JSON, the profile_list's shape), checked: ValueError
    with one line naming the file and the profile's field. Returns the plain data, which
    the hub's settings carry as the profile_list trait."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    if path.suffix.lower() == ".json":
        data = parse_json(raw, path)
    else:
        try:
            # The safe loader: plain data only, never a Python object.
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ValueError(f"{path}: not YAML{line}") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: must be a non-empty list of profiles")
    try:
        parse(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return data


def fill_tags(
    templates: dict[str, str], username: str, servername: str, profile: str
) -> dict[str, str]:
    """Extra tags for one launch: {username}, {servername} and {profile} filled in, and
    any character AWS does not allow in a tag value (a user name may have them)
    replaced by "_", cut to AWS's 256 characters."""
    values = {"username": username, "servername": servername, "profile": profile}
    filled = {}
    for key, template in templates.items():
        value = template
        for name, given in values.items():
            value = value.replace("{" + name + "}", re.sub(rf"(?!{TAG_CHARS}).", "_", given))
        filled[key] = value[:256]
    return filled
