"""Look-alike usernames through the REST API (issue "Hardening", defect 9).

Before RFC 8265 enforcement, a trailing no-break or zero-width space, a bidi
override, a fullwidth spelling or a decomposed "José" (e + U+0301)
registered a second account that looks exactly like an existing one. Now a
name that *is* an existing name in another form (case, width, composition)
answers 409, a name with an invisible, space or mixed-script look-alike
character answers 422 (problem+json naming the character), the stored name
is the normalised one, and logins find the user from any form of the name.
Each case runs on both user stores (SQLite and Redis)."""


from harness import Herald, Redis, assert_problem, jwt_parts, run_tests

PW = "correct horse battery staple"
USERS = "/api/v1/users"


def created(h, username):
    r = h.register(username, PW, headers=h.api_headers())
    assert r.status_code == 201, "register %r: HTTP %d %s" % (username, r.status_code, r.text[:300])
    return r.json()


def login_sub(h, username):
    """The `sub` of a password-grant token for username, or the error body."""
    r = h.token_request(grant_type="password", username=username, password=PW)
    if r.status_code != 200:
        return r.json()
    return jwt_parts(r.json()["access_token"])[1]["sub"]


def case_lookalikes_are_refused(h):
    alice = created(h, "alice")
    jose = created(h, "Jos\u00e9")
    # the same name in another form: taken
    for name in ("ALICE", "\uff41\uff4c\uff49\uff43\uff45", "\uff21lice"):
        body = assert_problem(h.register(name, PW), 409)
        assert "taken" in body["detail"], body
    for name in ("Jose\u0301", "JOSE\u0301", "JOS\u00c9", "\uff2a\uff4f\uff53\u00e9"):
        assert_problem(h.register(name, PW), 409)
    # invisible, space and look-alike characters: invalid, and the message says which
    for name, cp in (("alice\u00a0", "U+00A0"), ("alice\u200b", "U+200B"),
                     ("ali\u200bce", "U+200B"), ("\u202eecila", "U+202E"),
                     ("alice\u2066", "U+2066"), ("alice\ufeff", "U+FEFF"),
                     ("alice\u3000", "U+3000"), ("Jos\u00e9\u00a0", "U+00A0"),
                     ("\ufb01sh", "U+FB01"), ("\u212aelvin", "U+212A")):
        body = assert_problem(h.register(name, PW), 422)
        assert cp in body["detail"], "%r: detail %r does not name %s" % (name, body["detail"], cp)
    body = assert_problem(h.register("\u0430lice", PW), 422)  # Cyrillic a + Latin
    assert "scripts" in body["detail"], body
    assert_problem(h.register("alice ", PW), 422)
    assert_problem(h.register("al  ice", PW), 422)
    # and nothing of it created an account: the originals are still the only ones
    assert login_sub(h, "alice") == alice["id"]
    assert login_sub(h, "Jos\u00e9") == jose["id"]


def case_stored_name_is_normalised(h):
    renee = created(h, "Rene\u0301e")
    assert renee["username"] == "Ren\u00e9e", "stored %r, want the NFC form" % renee["username"]
    anna = created(h, "\uff21\uff4e\uff4e\uff41")
    assert anna["username"] == "Anna", "stored %r, want the width-mapped form" % anna["username"]
    got = h.http("GET", USERS + "/" + renee["id"], headers=h.api_headers()).json()
    assert got["username"] == "Ren\u00e9e", got
    # other scripts and single inner spaces are ordinary names
    for name in ("\u043f\u0440\u0438\u043c\u0435\u0440", "\u540d\u524d", "Mary Ann", "O'Brien"):
        assert created(h, name)["username"] == name


def case_login_finds_any_form(h):
    user = created(h, "Zo\u00eb")
    for form in ("Zo\u00eb", "zo\u00eb", "ZO\u00cb", "Zoe\u0308", "ZOE\u0308",
                 "\uff3a\uff4f\u00eb"):
        assert login_sub(h, form) == user["id"], "login as %r did not find the user" % form
    body = login_sub(h, "Zo\u00eb\u200b")
    assert body.get("error") == "invalid_grant", body


CASES = [case_lookalikes_are_refused, case_stored_name_is_normalised, case_login_finds_any_form]


def _bind(case, kind):
    def test():
        if kind == "redis":
            with Redis() as r, Herald(redis=r) as h:
                case(h)
        else:
            with Herald() as h:
                case(h)
    test.__name__ = "test_%s_%s" % (case.__name__[5:], kind)
    return test


for _case in CASES:
    for _kind in ("sqlite", "redis"):
        _t = _bind(_case, _kind)
        globals()[_t.__name__] = _t


if __name__ == "__main__":
    run_tests(globals())
