"""How a coordinator in a Fargate task learns the public address its workers must dial.

Task metadata (v4) names the task's network interface by its MAC address and private IP; the
interface with that MAC and IP in the stack's VPC (``MU_VPC_ID``, set by the task
definition), found with DescribeNetworkInterfaces, carries the public IP Fargate assigned.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from coordinator.core.logsink import IN_TASK_ENV as METADATA_ENV

VPC_ENV = "MU_VPC_ID"


class DiscoveryError(RuntimeError):
    pass


@dataclass(frozen=True)
class TaskNetwork:
    private_ip: str
    mac: str | None  # absent from task metadata before Fargate platform 1.4


def task_network(metadata_uri: str, timeout: float = 5.0) -> TaskNetwork:
    try:
        with urllib.request.urlopen(f"{metadata_uri.rstrip('/')}/task", timeout=timeout) as r:
            task = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DiscoveryError(f"cannot read task metadata from {metadata_uri}: {exc}") from exc
    for container in task.get("Containers", []):
        for network in container.get("Networks", []):
            for address in network.get("IPv4Addresses", []):
                return TaskNetwork(str(address), network.get("MACAddress"))
    raise DiscoveryError("task metadata lists no IPv4 address; is the task in awsvpc network mode?")


def public_ip(ec2: Any, network: TaskNetwork, vpc_id: str | None) -> str:
    """The public IP of the interface with this MAC and private IP, looked for in ``vpc_id`` only."""
    filters = [{"Name": "addresses.private-ip-address", "Values": [network.private_ip]}]
    if network.mac:
        filters.append({"Name": "mac-address", "Values": [network.mac]})
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    try:
        found = ec2.describe_network_interfaces(Filters=filters)["NetworkInterfaces"]
    except Exception as exc:
        from coordinator.aws.session import explain

        raise DiscoveryError(
            str(explain(exc, "finding the task's network interface", "the task role needs "
                        "ec2:DescribeNetworkInterfaces (the stack grants it); or pass --advertise HOST"))
        ) from exc  # fmt: skip
    where = f"in {vpc_id}" if vpc_id else "in this account"
    if not found:
        raise DiscoveryError(
            f"no network interface with {network.private_ip} (MAC {network.mac or 'unknown'}) {where}; "
            "pass --advertise HOST"
        )
    for eni in found:
        address = (eni.get("Association") or {}).get("PublicIp")
        if address:
            return str(address)
    raise DiscoveryError(
        f"the network interface with {network.private_ip} has no public IP; run the task with "
        "assignPublicIp=ENABLED in a public subnet (mu submit does), or pass --advertise HOST"
    )


def task_metadata_uri() -> str:
    """Where task metadata is, read from the environment alone (no network): a job that must
    discover its address learns it cannot before any AWS call is made."""
    uri = os.environ.get(METADATA_ENV)
    if not uri:
        raise DiscoveryError(
            f"{METADATA_ENV} is not set, so this is not an ECS task: "
            "say which address workers dial with --advertise"
        )
    return uri


def task_public_address(metadata_uri: str | None = None, ec2: Any = None, vpc_id: str | None = None) -> str:
    uri = metadata_uri or task_metadata_uri()
    network = task_network(uri)
    if ec2 is None:
        import boto3

        ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION") or None)
    return public_ip(ec2, network, vpc_id or os.environ.get(VPC_ENV))
