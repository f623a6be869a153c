"""How a coordinator in a Fargate task learns the public address its workers must dial.

Task metadata (v4) gives the task's private IP; the ENI holding that IP, found with
DescribeNetworkInterfaces, carries the public IP that Fargate assigned.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"


class DiscoveryError(RuntimeError):
    pass


def private_ip(metadata_uri: str, timeout: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(f"{metadata_uri.rstrip('/')}/task", timeout=timeout) as r:
            task = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DiscoveryError(f"cannot read task metadata from {metadata_uri}: {exc}") from exc
    for container in task.get("Containers", []):
        for network in container.get("Networks", []):
            for address in network.get("IPv4Addresses", []):
                return str(address)
    raise DiscoveryError("task metadata lists no IPv4 address; is the task in awsvpc network mode?")


def public_ip(ec2: Any, private: str) -> str:
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": [private]}]
    )["NetworkInterfaces"]
    for eni in found:
        address = (eni.get("Association") or {}).get("PublicIp")
        if address:
            return str(address)
    raise DiscoveryError(
        f"the network interface with {private} has no public IP; run the task with assignPublicIp=ENABLED "
        "in a public subnet (mu submit does), or pass --advertise HOST"
    )


def task_public_address(metadata_uri: str | None = None, ec2: Any = None) -> str:
    uri = metadata_uri or os.environ.get(METADATA_ENV)
    if not uri:
        raise DiscoveryError(
            f"{METADATA_ENV} is not set, so this is not an ECS task: "
            "say which address workers dial with --advertise"
        )
    private = private_ip(uri)
    if ec2 is None:
        import boto3

        ec2 = boto3.client("ec2")
    return public_ip(ec2, private)
