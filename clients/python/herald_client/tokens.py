"""Minting JWTs Herald accepts.

HS256/HS384/HS512 need only the standard library (the shared
HERALD_JWT_SECRET). RS256 and ES256 sign with the private key whose public
half Herald has (HERALD_JWT_PUBLIC_KEY); they use PyJWT when it is installed,
else the cryptography package.
"""

import base64
import hashlib
import hmac
import json
import time

_HS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _sign_asymmetric(alg, key, signing_input):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    pk = serialization.load_pem_private_key(key if isinstance(key, bytes) else key.encode(),
                                            password=None)
    if alg == "RS256":
        if not isinstance(pk, rsa.RSAPrivateKey):
            raise ValueError("RS256 needs an RSA private key")
        return pk.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if not isinstance(pk, ec.EllipticCurvePrivateKey) or pk.curve.name != "secp256r1":
        raise ValueError("ES256 needs a P-256 private key")
    r, s = utils.decode_dss_signature(pk.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants r || s


def mint_token(key, sub, ttl=3600, alg="HS256", roles=None, channels=None, info=None, iss=None,
               aud=None, kid=None, claims=None, now=None):
    """A signed JWT for user `sub`.

    key       the HS* secret (str or bytes), or a PEM private key for RS256/ES256
    ttl       seconds until `exp`
    roles     e.g. ["publisher"] (backends) or ["admin"]
    channels  channel patterns the token may subscribe to ("vip:*")
    info      a dict shown in presence
    iss, aud  set when Herald checks them (HERALD_JWT_ISS / HERALD_JWT_AUD)
    kid       the key id, when Herald rotates keys (HERALD_JWT_KID / HERALD_JWT_KEYS)
    claims    any further claims
    """
    if not isinstance(sub, str) or not sub:
        raise ValueError("sub must be a non-empty string")
    now = int(time.time() if now is None else now)
    payload = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    for name, value in (("roles", roles), ("channels", channels), ("info", info), ("iss", iss),
                        ("aud", aud)):
        if value is not None:
            payload[name] = list(value) if name in ("roles", "channels") else value
    payload.update(claims or {})
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    if alg in _HS:
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(payload, separators=(",", ":")).encode())).encode()
        secret = key.encode() if isinstance(key, str) else key
        return signing_input.decode() + "." + _b64(hmac.new(secret, signing_input, _HS[alg]).digest())
    if alg not in ("RS256", "ES256"):
        raise ValueError("unsupported algorithm %r (HS256, HS384, HS512, RS256, ES256)" % alg)
    try:
        import jwt  # PyJWT
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)
    except ImportError:
        pass
    try:
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(payload, separators=(",", ":")).encode())).encode()
        return signing_input.decode() + "." + _b64(_sign_asymmetric(alg, key, signing_input))
    except ImportError:
        raise RuntimeError("%s tokens need PyJWT or cryptography (pip install herald-client[jwt])"
                           % alg) from None
