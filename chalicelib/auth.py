"""Bearer-token check for the API's authorizer, and the tenant each token stands for.

API_TOKENS (or the SSM parameter) is a comma-separated list of entries: `tenant=token`
gives the token to a tenant, a bare token is the tenant `default`, and `*=token` is an
admin, who sees every tenant. With AUTH_MODE=iam the tenant is the caller's IAM principal,
or the tenant IAM_TENANTS gives it.
"""
import functools
import hmac
import logging
import re
from typing import Dict, List, Optional

from chalicelib import aws, config
from chalicelib.models import ALL_TENANTS, DEFAULT_TENANT

logger = logging.getLogger("task_scheduler.auth")


ADMIN = ALL_TENANTS
# A tenant's name: what a task records and an index key holds (no separator of ours in it).
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _split(raw: Optional[str]) -> List[str]:
    return [token.strip() for token in (raw or "").split(",") if token.strip()]


# A token after `tenant=` is at least this long: a bare base64 token ends in `=` padding,
# and must stay a bare token (the default tenant's), never become a tenant named by its
# start with `=` as its token.
MIN_TENANT_TOKEN = 8


def tenants_by_token(entries: List[str]) -> Dict[str, str]:
    """token -> tenant, from API_TOKENS entries (`tenant=token`, a bare token, `*=token`).
    An entry is `tenant=token` only when it starts with a tenant's name (or `*`) and `=`
    and a token of at least MIN_TENANT_TOKEN characters follows; anything else is a bare
    token."""
    found: Dict[str, str] = {}
    for entry in entries:
        tenant, sep, token = (part.strip() for part in entry.partition("="))
        named = (sep and len(token) >= MIN_TENANT_TOKEN
                 and (tenant == ADMIN or TENANT_NAME.match(tenant)))
        if named:
            found[token] = tenant
        else:
            found[entry.strip()] = DEFAULT_TENANT
    return found


def valid_tokens() -> List[str]:
    """The accepted tokens: API_TOKENS, else the SSM parameter API_TOKENS_PARAM (cached by
    aws.get_parameter, so a rotated token takes effect without a redeploy)."""
    direct = _split(config.api_tokens())
    if direct:
        return direct
    name = config.api_tokens_param()
    if name:
        return _split(aws.get_parameter(name))
    logger.warning("no API token is configured (API_TOKENS / API_TOKENS_PARAM): "
                   "every request is refused")
    return []


def tenant_of(header: Optional[str]) -> Optional[str]:
    """The tenant whose bearer token an Authorization header carries (ADMIN for an admin),
    or None when it carries no valid token. Every token is compared (constant time)."""
    if not header:
        return None
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    presented_bytes = presented.strip().encode()
    matched = None
    for token, tenant in tenants_by_token(valid_tokens()).items():
        # Compare with every token, so timing tells nothing about which one matched.
        if hmac.compare_digest(presented_bytes, token.encode()):
            matched = tenant
    return matched


def is_authorized(header: Optional[str]) -> bool:
    """Whether an Authorization header carries a valid bearer token."""
    return tenant_of(header) is not None


# API Gateway's userArn for a role's session: every session of one role is one principal.
_ASSUMED_ROLE = re.compile(r"^arn:([\w-]+):sts::(\d{12}):assumed-role/([^/]+)/.+$")
# A role ARN as IAM prints it may carry a path, which a session's ARN does not.
_ROLE = re.compile(r"^arn:([\w-]+):iam::(\d{12}):role/(?:.*/)?([^/]+)$")


def iam_principal(identity: Dict[str, Optional[str]]) -> Optional[str]:
    """The caller's IAM principal from API Gateway's identity: a role (whatever its session,
    as `arn:<partition>:iam::<account>:role/<name>`), a user, a federated user or root."""
    arn = identity.get("userArn") or identity.get("caller")
    if not arn:
        return None
    return _canonical_principal(arn)


def _canonical_principal(arn: str) -> str:
    arn = arn.strip()
    for pattern in (_ASSUMED_ROLE, _ROLE):
        match = pattern.match(arn)
        if match:
            partition, account, role = match.groups()
            return f"arn:{partition}:iam::{account}:role/{role}"
    return arn


# IAM_TENANTS is split only at a comma that starts the next `tenant=arn:` entry: an IAM
# role or user name may hold commas (and `=`), never a colon.
_NEXT_ENTRY = re.compile(r",\s*(?=(?:\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})\s*=\s*arn:)")


@functools.lru_cache(maxsize=4)  # read on every IAM-signed request; the setting rarely changes
def tenants_by_principal(raw: Optional[str]) -> Dict[str, str]:
    """principal -> tenant, from IAM_TENANTS entries `tenant=<principal ARN>` (`*=` an
    admin, `default=` the tenant of the tasks made before tenants); a principal named
    twice is an error, not a silent choice."""
    found: Dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in _NEXT_ENTRY.split(raw or ""))):
        tenant, sep, principal = (part.strip() for part in entry.partition("="))
        if not sep or not principal.startswith("arn:") or not (
                tenant == ADMIN or TENANT_NAME.match(tenant)):
            raise ValueError(f"{config.IAM_TENANTS} entry {entry!r} is not "
                             "tenant=<principal ARN>")
        principal = _canonical_principal(principal)
        if found.setdefault(principal, tenant) != tenant:
            raise ValueError(f"{config.IAM_TENANTS} names {principal} twice")
    return found


def iam_tenant(identity: Dict[str, Optional[str]]) -> Optional[str]:
    """The tenant of an IAM-signed request: IAM_TENANTS' name for its principal, else the
    principal itself; None when the request names no principal."""
    principal = iam_principal(identity)
    if principal is None:
        return None
    return tenants_by_principal(config.iam_tenants()).get(principal, principal)
