"""Reading the API's problem documents in tests."""


def fields(response) -> set[str]:
    """The request fields a 400 problem document names ('to', 'recipients/3/to')."""
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    return {e["pointer"].removeprefix("#/") for e in response.json().get("errors", [])}


def code(response) -> str:
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    body = response.json()
    assert body["status"] == response.status_code and body["type"].endswith(body["code"])
    return body["code"]
