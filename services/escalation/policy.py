"""Dunning policies as data: YAML files, validated at start-up, versioned by the hash of their content.

One file per policy (see ``policies/standard-en.yaml``). A tenant's *book* is a directory of policy files plus an
optional ``book.yaml`` naming the default policy and the policy of each customer segment::

    default: standard-fr
    segments:
      key-accounts: gentle

A customer is governed by the policy named in its profile (``customer.upserted`` ``policy``), else by its segment's,
else by the book's default. ``RELANCE_POLICY_DIR`` holds one book per tenant in a sub-directory named after the
tenant; the policy files directly in it (if any) form the book of every other tenant, and without any, the shipped
book (``services/escalation/policies``) does.

Wording is not part of a policy: ``template`` names a template the notifier resolves in the customer's language
(falling back to the policy's ``language``), so one ladder serves every language. The two shipped policies differ
only in their law (``standard-fr`` French, ``standard-en`` English: the UK tenant's), default language and holiday
calendar.

Reading and checking one file, and the version of a policy, are :mod:`services.escalation.policy_file`'s work; this
module assembles the files into books and the books into the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from services.escalation.model import Policy
from services.escalation.policy_file import (
    BOOK_FILE,
    EU_MINIMUM_MARGIN,
    SHIPPED_POLICIES,
    PolicyWarning,
    load_policy,
    policy_version,
    read_book,
    read_policy,
)
from shared.config import ConfigurationError

__all__ = [
    "BOOK_FILE",
    "EU_MINIMUM_MARGIN",
    "SHIPPED_POLICIES",
    "PolicyBook",
    "PolicyLibrary",
    "PolicyWarning",
    "load_policy",
    "policy_version",
    "read_policy",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class PolicyBook:
    """The policies of one tenant and which customer each applies to."""

    policies: Mapping[str, Policy]
    default: str
    segments: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (self.default, *self.segments.values()):
            if name not in self.policies:
                raise ConfigurationError(f"the policy book names {name!r}, which is none of {sorted(self.policies)}")

    def for_customer(self, profile: Mapping[str, Any] | None) -> Policy:
        """The customer's own policy, else its segment's, else the default.

        A name the book does not hold (the ERP and relance disagree) falls back to the next rule and is logged: the
        customer still gets reminded, under the closest policy the book knows.
        """
        profile = profile or {}
        name = profile.get("policy")
        if name:
            if name in self.policies:
                return self.policies[name]
            log.warning("escalation.unknown_policy", policy=name, known=sorted(self.policies))
        segment = profile.get("segment")
        if segment:
            if segment in self.segments:
                return self.policies[self.segments[segment]]
            log.debug("escalation.segment_without_policy", segment=segment)
        return self.policies[self.default]

    @classmethod
    def load(cls, directory: Path) -> PolicyBook:
        """Every ``*.yaml`` policy in ``directory`` plus its ``book.yaml``; all errors reported together."""
        files = sorted(p for p in directory.glob("*.y*ml") if p.is_file() and p.name not in (BOOK_FILE, "book.yml"))
        if not files:
            raise ConfigurationError(f"{directory}: no policy file (*.yaml) in this directory")
        errors: list[str] = []
        policies: dict[str, Policy] = {}
        origin: dict[str, Path] = {}
        for path in files:
            try:
                policy = load_policy(path)
            except ConfigurationError as exc:
                errors.append(str(exc))
                continue
            if policy.name in policies:
                errors.append(f"{path}: name {policy.name!r} is also the name of {origin[policy.name]}: rename one")
                continue
            policies[policy.name] = policy
            origin[policy.name] = path
        book_path = directory / BOOK_FILE
        default: str | None = None
        segments: dict[str, str] = {}
        if book_path.exists():
            try:
                default, segments = read_book(book_path)
            except ConfigurationError as exc:
                errors.append(str(exc))
            else:
                for where, name in (("default", default), *((f"segments.{s}", n) for s, n in segments.items())):
                    if name not in policies and len(policies) == len(files):
                        errors.append(
                            f"{book_path}: {where}: no policy is named {name!r}; "
                            f"the policies here are {', '.join(sorted(policies))}"
                        )
        elif len(files) == 1 and policies:
            default = next(iter(policies))
        else:
            errors.append(f"{directory}: several policies and no {BOOK_FILE}: add one with 'default: <policy name>'")
        if errors:
            raise ConfigurationError("\n".join(errors))
        assert default is not None
        return cls(policies=policies, default=default, segments=segments)

    @classmethod
    def shipped(cls) -> PolicyBook:
        return cls.load(SHIPPED_POLICIES)


@dataclass(frozen=True, slots=True)
class PolicyLibrary:
    """Every tenant's book: its own when it has one, otherwise the common one."""

    common: PolicyBook
    tenants: Mapping[str, PolicyBook] = field(default_factory=dict)

    def for_tenant(self, tenant: str) -> PolicyBook:
        return self.tenants.get(tenant, self.common)

    @classmethod
    def load(cls, root: Path | None) -> PolicyLibrary:
        """Books from ``RELANCE_POLICY_DIR`` (``root``), or the shipped book alone when it is not set."""
        if root is None:
            return cls(common=PolicyBook.shipped())
        if not root.is_dir():
            raise ConfigurationError(f"RELANCE_POLICY_DIR: {root} is not a directory")
        errors: list[str] = []
        tenants: dict[str, PolicyBook] = {}
        for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                tenants[directory.name] = PolicyBook.load(directory)
            except ConfigurationError as exc:
                errors.append(str(exc))
        own = any(p.is_file() and p.suffix in (".yaml", ".yml") and p.stem != "book" for p in root.iterdir())
        common: PolicyBook | None = None
        try:
            common = PolicyBook.load(root) if own else PolicyBook.shipped()
        except ConfigurationError as exc:
            errors.append(str(exc))
        if errors:
            raise ConfigurationError("invalid policies:\n" + "\n".join(errors))
        assert common is not None
        return cls(common=common, tenants=tenants)
