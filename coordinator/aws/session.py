"""Credentials and region from the standard chain, and AWS errors as one line that says what to do.

``mu submit`` and ``mu run --backend aws`` find the region as the AWS CLI does (``--region``,
then ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, then the profile's ``region``) and the
credentials from the environment, the profile (``--profile`` or ``AWS_PROFILE``), SSO, or the
container or instance role. Anything missing or refused is an :class:`AwsError` whose message
fits on one line and whose ``status`` is 2 when the user's configuration must change.
"""

from __future__ import annotations

import os
from typing import Any

USAGE = 2  # exit status for configuration errors: nothing ran, fix the setup and run again
FAILED = 1

NO_REGION = (
    "no AWS region: pass --region, set AWS_DEFAULT_REGION, "
    "or give your profile one ('aws configure set region us-east-1')"
)
NO_CREDENTIALS = (
    "no AWS credentials found (environment, profile, SSO, container or instance role): "
    "run 'aws configure' or 'aws sso login', or pass --profile NAME"
)
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_INVALID = {
    "InvalidClientTokenId", "UnrecognizedClientException", "InvalidSignatureException",
    "SignatureDoesNotMatch", "AuthFailure", "InvalidAccessKeyId", "IncompleteSignature",
}  # fmt: skip
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}


class AwsError(Exception):
    """One line for the user; ``status`` is the exit status it deserves."""

    def __init__(self, message: str, status: int = FAILED, code: str = "") -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
        self.code = code  # AWS's error code, when AWS answered

    @property
    def denied(self) -> bool:
        return self.code in DENIED


def use_profile(profile: str | None) -> None:
    """``--profile NAME`` means ``AWS_PROFILE=NAME`` for every AWS client this process makes."""
    if profile:
        os.environ["AWS_PROFILE"] = profile


def new_session() -> Any:
    """A botocore session on the standard chain (``AWS_PROFILE`` included)."""
    import botocore.session

    return botocore.session.Session()


def resolve_region(session: Any, region: str | None = None) -> str:
    """``region``, else ``AWS_REGION``, else botocore's (``AWS_DEFAULT_REGION``, the profile's)."""
    try:
        found = region or os.environ.get("AWS_REGION") or session.get_config_variable("region")
    except Exception as exc:
        raise explain(exc, "reading the AWS configuration") from exc
    if not found:
        raise AwsError(NO_REGION, USAGE)
    return str(found)


def credentials(session: Any) -> Any:
    """The chain's credentials, or an :class:`AwsError` saying how to provide them."""
    try:
        found = session.get_credentials()
    except Exception as exc:
        raise explain(exc, "loading AWS credentials") from exc
    if found is None:
        raise AwsError(NO_CREDENTIALS, USAGE)
    return found


def explain(exc: BaseException, doing: str, denied_hint: str = "") -> AwsError:
    """Any botocore error as one line: what failed, why, and what to do about it."""
    from botocore import exceptions as bx

    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, bx.NoRegionError):
        return AwsError(NO_REGION, USAGE)
    if isinstance(exc, bx.NoCredentialsError):
        return AwsError(NO_CREDENTIALS, USAGE)
    if isinstance(exc, bx.ProfileNotFound):
        return AwsError(
            f"{exc}: check --profile or AWS_PROFILE ('aws configure list-profiles' lists them)", USAGE
        )
    if isinstance(exc, bx.PartialCredentialsError | bx.CredentialRetrievalError | bx.TokenRetrievalError
                  | bx.SSOError | bx.InvalidConfigError):  # fmt: skip
        return AwsError(f"{doing}: {exc}; fix your AWS configuration (or run 'aws sso login')", USAGE)
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in _EXPIRED:
            return AwsError(f"{doing}: your AWS credentials have expired; refresh them, retry", USAGE, code)
        if code in _INVALID:
            return AwsError(
                f"{doing}: AWS does not accept these credentials ({code}); check the access key or --profile",
                USAGE,
                code,
            )
        if code in DENIED:
            hint = f"; {denied_hint}" if denied_hint else ""
            return AwsError(f"{doing}: access denied: {message or code}{hint}", USAGE, code)
        return AwsError(f"{doing}: {code}: {message}" if message else f"{doing}: {code}", FAILED, code)
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        return AwsError(f"{doing}: {exc}; check your network connection and the region")
    if isinstance(exc, bx.BotoCoreError):
        return AwsError(f"{doing}: {exc}")
    return AwsError(f"{doing}: {type(exc).__name__}: {exc}")
