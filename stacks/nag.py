"""Acknowledging cdk-nag findings: every one carries its reason next to the resource it covers."""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` on ``construct`` and its children, or only the named findings of it."""
    ids = [f"{rule}[{finding}]" for finding in findings] or [rule]
    Validations.of(construct).acknowledge(*(Acknowledgment(id=i, reason=reason) for i in ids))


def acknowledge_wildcards(construct: IConstruct, reason: str, *resources: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for exactly these wildcard resources (ARNs, tokens allowed).

    IAM5 reports each wildcard resource separately, so naming them keeps a new wildcard from
    slipping in under an old reason.
    """
    findings = [f"Resource::{finding_text(construct, r)}" for r in resources]
    acknowledge(construct, "AwsSolutions-IAM5", reason, *findings)


def finding_text(scope: IConstruct, value: str) -> str:
    """A resource as cdk-nag writes it in a finding: ``Ref X`` as ``<X>``, ``GetAtt X.Y`` as ``<X.Y>``."""
    return _flatten(Stack.of(scope).resolve(value))


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "Fn::Join":
            return str(arg[0]).join(_flatten(part) for part in arg[1])
        if kind == "Ref":
            return f"<{arg}>"
        if kind == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
    raise ValueError(f"cannot render {value!r} as a cdk-nag finding")
