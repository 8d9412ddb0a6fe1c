async def test_healthz_answers_on_a_real_socket(http):
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "last_seq": 0}
