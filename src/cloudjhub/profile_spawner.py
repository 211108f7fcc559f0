"""InstanceSpawner's profiles: the `profile_list` trait, the options form, and
applying a user's pick before a spawn touches EC2.

Overrides are recomputed on every start from the values the spawner had before
any profile was applied, so nothing of an earlier spawn's pick carries over.
"""

from __future__ import annotations

import dataclasses
from inspect import isawaitable
from typing import Any

from pydantic import TypeAdapter
from tornado import web
from traitlets import Callable, Dict, Enum, List, TraitError, Unicode, Union, validate

from . import profile_form, unlisted_types
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec
from .config import TagKey, TagValue
from .executor import blocking
from .fleet import Fleet
from .profiles import (
    MARKETS,
    OVERRIDABLE,
    REPLACE_OPTION,
    Profile,
    ProfileError,
    default_profile,
    fill_tags,
    from_form,
    parse,
    select,
)
from .spawner_options import InstanceSpawnerOptions, SpawnError, trait_error

_EXTRA_TAGS = TypeAdapter(dict[TagKey, TagValue])
# StateReason.Code of a spot instance AWS interrupted (EC2 API, StateReason).
SPOT_RECLAIMED = "Server.SpotInstanceTermination"
# RunInstances errors of a spot request AWS cannot fill now (EC2 API, error codes).
SPOT_UNFILLABLE = (
    "InsufficientInstanceCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
)


class ProfileSpawnerMixin(InstanceSpawnerOptions):
    """Profiles for InstanceSpawner (`c.InstanceSpawner.profile_list`)."""

    profile_list = Union(
        [List(), Callable()],
        default_value=[],
        help="Profiles a user picks from on the spawn page, in kubespawner's shape: a list "
        "of {display_name, slug, description, default, spawner_override, profile_options}, "
        "or a callable (sync or async) taking the spawner and returning one. "
        "spawner_override may set: " + ", ".join(OVERRIDABLE) + ". Empty: no form.",
    ).tag(config=True)
    market = Enum(
        list(MARKETS),
        default_value="on-demand",
        help="'spot' launches workers as spot instances; when AWS cannot fill the request "
        "the worker is launched on-demand, and the user is told.",
    ).tag(config=True)
    extra_tags = Dict(
        value_trait=Unicode(),
        help="Tags added to each worker and its volumes; values may use {username}, "
        "{servername} and {profile}.",
    ).tag(config=True)

    # The traits before any profile: what every start's overrides start from.
    _baseline: dict[str, Any] | None = None
    # The last accepted pick ({"profile": slug, option: choice}): reused when a start
    # gives none; kept in the spawner's state.
    profile_choice: dict[str, Any] = {}
    profile_slug: str = ""
    replace_instance: bool = False
    # Said on the spawn page's form next time (a spot fallback, a reclaimed instance).
    profile_notice: str = ""
    options_refused: bool = False
    # This start's extra tags, filled in (launch_tags): on its worker, volumes, usage log.
    current_tags: dict[str, str] = {}
    # The traits the picked profile set: only those make a stopped instance unfit.
    profile_overrides: frozenset[str] = frozenset()

    @validate("profile_list")
    def _check_profile_list(self, proposal: Any) -> Any:
        if not callable(proposal["value"]):
            with trait_error():
                parse(proposal["value"])
        return proposal["value"]

    @validate("extra_tags")
    def _check_extra_tags(self, proposal: Any) -> Any:
        with trait_error("extra_tags: "):
            return dict(_EXTRA_TAGS.validate_python(proposal["value"]))

    async def profiles(self) -> list[Profile]:
        """The profiles for this user (a callable profile_list is asked each time)."""
        raw: Any = self.profile_list
        if callable(raw):
            raw = raw(self)
            if isawaitable(raw):
                raw = await raw
        try:
            return parse(raw) if raw else []
        except ValueError as exc:
            raise SpawnError(f"cloudjhub is misconfigured: {exc}. Tell your admin.") from None

    # ---- the form ------------------------------------------------------------

    async def get_options_form(self) -> str:
        if getattr(self, "options_form", ""):
            form: str = await super().get_options_form()  # type: ignore[misc]
            return form
        profiles = await self.profiles()
        if not profiles:
            return ""
        picked = self.profile_choice.get("profile") or default_profile(profiles).key
        return profile_form.render(profiles, picked, self.profile_notice)

    def run_options_from_form(self, form_data: dict[str, list[str]]) -> Any:
        if self.profile_list and not getattr(self, "options_form", ""):
            return from_form(form_data)
        return super().run_options_from_form(form_data)  # type: ignore[misc]

    def options_from_query(self, query_data: dict[str, list[str]]) -> Any:
        options = self.run_options_from_form(query_data)
        # A GET has no XSRF check, so a link must never confirm losing an instance.
        if isinstance(options, dict):
            options.pop(REPLACE_OPTION, None)
        return options

    # ---- a start -------------------------------------------------------------

    async def apply_profile(self, user_options: dict[str, Any] | None) -> None:
        """Set the traits of the picked profile, or refuse the options with an HTTP 400
        before any EC2 call."""
        self.options_refused = False
        if self._baseline is None:
            self._baseline = {name: getattr(self, name) for name in OVERRIDABLE}
        with self.hold_trait_notifications():
            for name, value in self._baseline.items():
                setattr(self, name, value)
        self.replace_instance = False
        self.profile_overrides = frozenset()
        profiles = await self.profiles()
        if not profiles:
            return
        notice = ""
        try:
            # Off the loop: an admin's validation_regex may take its whole timeout on a
            # value a user crafted, and the loop serves every user.
            chosen = await blocking(select, profiles, user_options or self.profile_choice)
        except ProfileError as exc:
            sent = user_options and not self._options_reused()
            if sent or not (user_options or self.profile_choice):
                self.options_refused = True
                raise web.HTTPError(400, f"Bad user_options: {exc}") from None
            # A kept pick (ours, or JupyterHub's last user_options) the admin has since
            # removed is not the user's mistake.
            self.log.warning("kept pick no longer offered (%s); default profile", exc)
            chosen = select(profiles, {})
            notice = (
                f"Your last pick is no longer offered ({exc}); you got the default "
                f"profile {chosen.profile.key!r}."
            )
        config = self.server_config
        why = await blocking(
            unlisted_types.problem, chosen, self.ec2.instance_type_info, config.REGION,
            config.GPU_IMAGE,
        )  # fmt: skip
        if why:
            self.options_refused = True
            raise web.HTTPError(400, f"Bad user_options: {why}")
        if chosen.replace_instance:
            self._forget_confirmation()
        try:
            with self.hold_trait_notifications():
                for name, value in chosen.overrides.items():
                    setattr(self, name, value)
        except TraitError as exc:
            raise SpawnError(
                f"cloudjhub is misconfigured: profile {chosen.profile.key!r}: {exc}. "
                "Tell your admin."
            ) from None
        self.profile_overrides = frozenset(chosen.overrides)
        if self.market == "spot" and not self.user_home_ebs_size:
            # A spot worker is terminated, not stopped: without a home volume every
            # stop would delete the user's files.
            raise SpawnError(
                f"cloudjhub is misconfigured: profile {chosen.profile.key!r}: market spot "
                "needs a home volume (user_home_ebs_size > 0). Tell your admin."
            )
        self.profile_choice = chosen.user_options()
        self.profile_slug = chosen.profile.key
        self.replace_instance = chosen.replace_instance
        self.profile_notice = notice

    def _options_reused(self) -> bool:
        """Whether JupyterHub reused the last user_options from its database: it does on
        a start whose request sends none (a REST call without a body)."""
        handler: Any = getattr(self, "handler", None)
        if handler is None:
            return False  # no request to tell by: taken as sent
        request = handler.request
        return not request.body and not request.query_arguments

    @property
    def pool_fits(self) -> bool:
        """Whether a warm-pool worker (the cluster's image, hibernation, market and root
        disk, as pool_spec launches them; the claim matches the type) can be this
        profile's."""
        if self.profile_overrides & {"worker_ami", "hibernate", "market", "extra_tags"}:
            return False
        if "worker_ebs_size" not in self.profile_overrides:
            return True
        return bool(self.worker_ebs_size == (self._baseline or {}).get("worker_ebs_size"))

    def profile_state(self) -> dict[str, Any]:
        return {"profile_choice": self.profile_choice} if self.profile_choice else {}

    def load_profile_state(self, state: dict[str, Any]) -> None:
        choice = state.get("profile_choice")
        self.profile_choice = dict(choice) if isinstance(choice, dict) else {}

    def replacement_needed(self, instance: Instance) -> str:
        """Why the stopped `instance` cannot become the picked profile in place ("" if it can):
        AWS changes an instance's type while stopped, never its image, market or
        hibernation."""
        reasons = []
        # Only what the profile sets: an image rebuilt by a relaunch, or HIBERNATE turned
        # on later, never forces anyone off their instance.
        picked = self.profile_overrides
        if "worker_ami" in picked and instance.image_id not in ("", self.worker_ami):
            reasons.append(
                f"another image ({instance.image_id}, the profile's is {self.worker_ami})"
            )
        if "hibernate" in picked and instance.hibernation != self.hibernate:
            reasons.append("another hibernation setting")
        elif instance.hibernation and not self._type_fits(instance):
            # EC2 User Guide, hibernation limitations: the type of an instance enabled
            # for hibernation cannot be changed.
            reasons.append(f"hibernation enabled, so its type ({instance.instance_type}) is fixed")
        return " and ".join(reasons)

    def on_demand_for_spot(self, instance: Instance) -> bool:
        """Whether a spot pick meets an on-demand instance (most often a fallback of an
        earlier spot request). EC2 cannot turn it spot, but it is resumed, not
        refused: only an explicit replace_instance gives a new spot one."""
        return "market" in self.profile_overrides and self.market == "spot" and not instance.spot

    def _type_fits(self, instance: Instance) -> bool:
        """The picked type, or one of worker_instance_type_fallbacks (what a launch
        without capacity got): changing it back would only meet the shortage again."""
        fallbacks: list[str] = getattr(self, "worker_instance_type_fallbacks", [])
        return instance.instance_type in (self.worker_instance_type, *fallbacks)

    def _forget_confirmation(self) -> None:
        """JupyterHub keeps the last user_options and reuses them on a start that gives
        none; a confirmation to replace an instance must count for this start only."""
        orm: Any = getattr(self, "orm_spawner", None)
        kept = getattr(orm, "user_options", None)
        if isinstance(kept, dict) and REPLACE_OPTION in kept:
            # Committed with the state JupyterHub saves once the start is over.
            orm.user_options = {k: v for k, v in kept.items() if k != REPLACE_OPTION}

    async def fit_to_profile(self, instance: Instance) -> bool:
        """Make the user's stopped instance the picked profile's: its type is changed in
        place; for another image or hibernation setting it is terminated, but only when
        the user confirmed (then True: launch anew; the home volume moves with them)."""
        why = self.replacement_needed(instance)
        on_demand = self.on_demand_for_spot(instance)
        if why or (on_demand and self.replace_instance):
            if not self.replace_instance:
                raise SpawnError(
                    f"Your stopped instance {instance.id} has {why} than profile "
                    f"{self.profile_slug!r} needs, which AWS cannot change in place. To replace "
                    f"it, start again with 'Replace my instance' checked (REST API: "
                    f'"{REPLACE_OPTION}": true). Your home volume moves with you; anything '
                    "else on the old instance's disk is lost."
                )
            self._emit(8, f"Replacing your instance {instance.id}, as you confirmed")
            await blocking(self.ec2.terminate_workers, [instance.id])
            await self._wait_for(instance.id, ("terminated",))
            return True
        if on_demand:
            note = (
                f"Your instance {instance.id} is on-demand (AWS had no spot capacity when it "
                "was launched); resuming it. A spot one is only tried for a new instance: "
                "start with 'Replace my instance' checked to get one."
            )
            self.profile_notice = note
            self._emit(8, note)
        if not self._type_fits(instance):
            self._emit(
                8,
                f"Changing your instance's type from {instance.instance_type} to "
                f"{self.worker_instance_type}",
            )
            await blocking(self.ec2.set_instance_type, instance.id, self.worker_instance_type)
        return False

    def tell_if_reclaimed(self, instance: Instance | None) -> None:
        """A spot instance AWS took back: say so, on the progress and the next form."""
        if instance is not None and instance.state_reason == SPOT_RECLAIMED:
            note = (
                f"AWS reclaimed your spot instance {instance.id}; you get a new one, "
                "with your home volume."
            )
            self.profile_notice = note
            self._emit(6, note)

    def launch_tags(self, username: str, servername: str) -> dict[str, str]:
        """EXTRA_TAGS of the cluster, then the profile's extra_tags, filled in."""
        templates = {**self.server_config.EXTRA_TAGS, **self.extra_tags}
        return fill_tags(templates, username, servername, self.profile_slug)

    async def run_worker(
        self, user: str, user_id: str, spec: WorkerSpec, token: str, server: str = ""
    ) -> Instance:
        """Launch (for the user's named `server`, "" the default); a spot request AWS
        cannot fill falls back to on-demand, and says so."""
        try:
            return await self._launch_with_fallbacks(user, user_id, spec, token, server)
        except CloudError as exc:
            if spec.market != "spot" or exc.code not in SPOT_UNFILLABLE:
                raise
            note = (
                f"AWS cannot give you a spot {spec.instance_type} now ({exc.code}); "
                "launching an on-demand one instead"
            )
        self.log.warning("%s: %s", user, note)
        self.profile_notice = note
        self._emit(12, note)
        on_demand = dataclasses.replace(spec, market="on-demand")
        # Another request, with parameters of its own: its own token.
        retry = "cjo-" + token[4:]
        return await self._launch_with_fallbacks(user, user_id, on_demand, retry, server)

    async def end_if_spot(self, instance_id: str) -> bool:
        """A spot worker cannot be stopped (one-time request): it is terminated instead,
        its home volume kept; the next start launches a new one. True if it was."""
        known = self.fleet.get(instance_id)  # launched or found by this hub: remembered
        if known is None:  # a hub restarted since: ask EC2 (InstanceLifecycle)
            try:
                found = await blocking(self.ec2.describe, [instance_id])
            except CloudError as exc:
                # Not knowing must not fail the whole stop: the plain stop runs.
                self.log.warning("cannot tell if %s is spot (%s); stopping it", instance_id, exc)
                return False
            known = found[0] if found else None
        if known is None or not known.spot:
            return False
        await blocking(self.ec2.terminate_workers, [instance_id])
        return True

    # ---- what InstanceSpawner provides -----------------------------------------

    async def _launch_with_fallbacks(
        self, user: str, user_id: str, spec: WorkerSpec, token: str, server: str = ""
    ) -> Instance:
        raise NotImplementedError  # spawner_ec2.Ec2Calls: the queue, capacity fallback

    @property
    def ec2(self) -> HubEc2:
        raise NotImplementedError

    @property
    def hibernates(self) -> bool:
        """Whether this user's worker is launched to hibernate, and so hibernates on a
        stop: AWS refuses hibernation with a one-time spot request (HibernationOptions),
        and a spot worker is ended instead."""
        return self.hibernate and self.market != "spot"

    @property
    def fleet(self) -> Fleet:
        raise NotImplementedError

    def _emit(self, percent: int, message: str) -> None:
        raise NotImplementedError

    async def _wait_for(self, instance_id: str, states: tuple[str, ...]) -> Instance:
        raise NotImplementedError
