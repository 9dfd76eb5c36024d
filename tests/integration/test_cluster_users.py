#!/usr/bin/python3
"""The user store on a Redis Cluster (HERALD_REDIS_URL=redis+cluster://,
auth/store_redis.c, issue 18): every key of the store under the hash tag
{herald}, so one master holds the users. Through the REST API of real
Herald nodes on a real 3-master + 3-replica cluster: register, log in
(OAuth2 password grant), /me, then a CLUSTER FAILOVER of the users'
master, then a second node sees the user (GET, login, /me), deletes it,
and the first node refuses the deleted user's token and password."""

from contextlib import ExitStack

from harness import cluster_nodes, run_tests
from redis_topology import RedisCluster

USERS = "/api/v1/users"
PW = "correct horse battery staple"


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def json_of(r, status):
    assert r.status_code == status, "HTTP %d, want %d: %s" % (r.status_code, status, r.text[:300])
    return r.json()


def test_users_on_a_cluster_across_a_failover():
    with RedisCluster() as c, ExitStack() as st:
        a, b = cluster_nodes(st, c.url(), 2, {}, None)
        slot = c.keyslot("{herald}:user:x")
        users_master = c.owner(slot)
        # register through node a (API key), log in, /me
        user = json_of(a.register("carol", PW, headers=a.api_headers()), 201)
        assert user["username"] == "carol", user
        tok_a = a.login("carol", PW)["access_token"]
        assert json_of(a.http("GET", USERS + "/me", headers=bearer(tok_a)), 200) == user
        # the users' keys are where the hash tag says, on that master only
        keys = users_master.cmd("CLUSTER", "GETKEYSINSLOT", slot, 100)
        assert "{herald}:user:" + user["id"] in keys, keys
        assert any(k.startswith("{herald}:username:") for k in keys), keys
        # the master holding the users hands over to its replica
        c.failover(c.replica_of(users_master))
        assert c.owner(slot) is not users_master, "the users' slot did not move"
        # the same name is still taken (read through the new master), from either node
        assert a.register("carol", PW, headers=a.api_headers()).status_code == 409
        assert b.register("Carol", PW, headers=b.api_headers()).status_code == 409
        # node b sees the user: by id, by password, /me, and a's token is valid there
        assert json_of(b.http("GET", USERS + "/" + user["id"], headers=b.api_headers()), 200) == user
        tok_b = b.login("carol", PW)["access_token"]
        assert json_of(b.http("GET", USERS + "/me", headers=bearer(tok_b)), 200) == user
        assert json_of(b.http("GET", USERS + "/me", headers=bearer(tok_a)), 200) == user
        # a user registered after the failover works on node a as well
        dave = json_of(b.register("dave", PW, headers=b.api_headers()), 201)
        tok_d = a.login("dave", PW)["access_token"]
        assert json_of(a.http("GET", USERS + "/me", headers=bearer(tok_d)), 200) == dave
        # node b deletes carol: node a refuses her tokens and password, the name is free
        r = b.http("DELETE", USERS + "/" + user["id"], headers=b.api_headers())
        assert r.status_code == 204, (r.status_code, r.text[:300])
        for h, tok in ((a, tok_a), (a, tok_b), (b, tok_a)):
            r = h.http("GET", USERS + "/me", headers=bearer(tok))
            assert r.status_code in (401, 404), (h.base, r.status_code, r.text[:300])
        assert a.http("GET", USERS + "/" + user["id"], headers=a.api_headers()).status_code == 404
        r = a.token_request(grant_type="password", username="carol", password=PW)
        assert r.status_code == 400 and r.json().get("error") == "invalid_grant", (
            r.status_code, r.text[:300])
        assert c.owner(slot).cmd("EXISTS", "{herald}:user:" + user["id"]) == 0
        # dave is untouched
        assert json_of(a.http("GET", USERS + "/me", headers=bearer(tok_d)), 200) == dave
        for h in (a, b):
            assert h.healthy()


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=200)
