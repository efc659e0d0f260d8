"""Pages, the API and /metrics are sent gzip-compressed to a client that accepts it (the overview of 1,000
integrations is about 1.4 MB of HTML: issue 19's weight), and compression does not expose a secret: the CSRF token a
page carries is masked afresh in every answer (so a compression attack cannot read it back from compressed sizes
beside reflected text such as the search box), and /reauth and /auth answers, which carry a link token or a sign-in
code, are never compressed."""

from __future__ import annotations

from tests.web.conftest import csrf_of, login


def test_pages_are_compressed_for_a_client_that_accepts_it(world):
    with world.client() as c:
        assert login(c).status_code == 303
        page = c.get("/?q=" + "a" * 150, headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
        assert "content-security-policy" in page.headers  # the security headers stay
        raw = c.get("/", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and "<h1" in raw.text


def test_reauth_and_auth_answers_are_never_compressed(world):
    with world.client() as c:
        for path in ("/reauth/" + "x" * 60, "/auth/callback?code=abc&state=def"):
            r = c.get(path, headers={"Accept-Encoding": "gzip"})
            assert "content-encoding" not in r.headers, (path, r.status_code)


def test_the_csrf_token_differs_in_every_answer_and_each_one_works(world):
    with world.client() as c:
        assert login(c).status_code == 303
        tokens = {csrf_of(c.get("/").text) for _ in range(5)}
        assert len(tokens) == 5  # masked afresh: no fixed secret in a compressed page
        for token in tokens:  # any of them, the older ones too, is the session's token: the action is reached
            r = c.post("/incidents/999/ack", data={"csrf_token": token, "by": "me"}, follow_redirects=False)
            assert r.status_code != 403, r.text
        good = csrf_of(c.get("/").text)
        for forged in (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), "", "not-base64!"):
            r = c.post("/incidents/999/ack", data={"csrf_token": forged, "by": "me"}, follow_redirects=False)
            assert r.status_code == 403, forged
