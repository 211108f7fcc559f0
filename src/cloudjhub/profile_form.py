"""The spawn page's options form for profiles: kubespawner's field names
(`profile`, `profile-option-<slug>--<option>`, `...--unlisted-choice`), every
admin-given text escaped (autoescape), so a profile's name cannot inject markup."""

from __future__ import annotations

from jinja2 import Environment

from .profiles import REPLACE_OPTION, UNLISTED_CHOICE, Profile

_TEMPLATE = Environment(autoescape=True).from_string(
    """\
<div class="cloudjhub-profiles">
{% if notice %}<div class="alert alert-info" id="cloudjhub-notice">{{ notice }}</div>{% endif %}
{% for p in profiles %}
<div class="form-check mb-3">
  <input class="form-check-input" type="radio" name="profile" id="profile-{{ p.key }}"
         value="{{ p.key }}"{% if p.key == picked %} checked{% endif %}>
  <label class="form-check-label" for="profile-{{ p.key }}">
    <strong>{{ p.display_name }}</strong>{% if p.description %}: {{ p.description }}{% endif %}
  </label>
  {% for name, opt in p.profile_options.items() %}
  {% set field = "profile-option-" ~ p.key ~ "--" ~ name %}
  <div class="ms-4">
    <label for="{{ field }}">{{ opt.display_name }}</label>
    <select class="form-select" name="{{ field }}" id="{{ field }}">
      {% for key, choice in opt.choices.items() %}
      <option value="{{ key }}"{% if key == opt.default_choice() %} selected{% endif %}>
        {{ choice.display_name }}</option>
      {% endfor %}
      {% if opt.unlisted_choice.enabled %}
      <option value="{{ unlisted }}"{% if not opt.choices %} selected{% endif %}>
        {{ opt.unlisted_choice.display_name_in_choices }}</option>
      {% endif %}
    </select>
    {% if opt.unlisted_choice.enabled %}
    <input class="form-control" type="text" name="{{ field }}--unlisted-choice"
           id="{{ field }}--unlisted-choice" maxlength="255"
           placeholder="{{ opt.unlisted_choice.display_name }}">
    {% endif %}
  </div>
  {% endfor %}
</div>
{% endfor %}
<div class="form-check">
  <input class="form-check-input" type="checkbox" name="{{ replace }}" id="{{ replace }}">
  <label class="form-check-label" for="{{ replace }}">
    If the profile needs another image or hibernation setting than my stopped instance has,
    replace my instance. My home volume moves with me; anything else on the old
    instance's disk is lost.
  </label>
</div>
</div>
"""
)


def render(profiles: list[Profile], picked: str, notice: str = "") -> str:
    """The form's HTML: one radio button per profile, its options below it."""
    return _TEMPLATE.render(
        profiles=profiles,
        picked=picked,
        notice=notice,
        unlisted=UNLISTED_CHOICE,
        replace=REPLACE_OPTION,
    )
