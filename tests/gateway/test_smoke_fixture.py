async def test_healthz_answers_on_a_real_socket(http):
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "order_entry": True, "last_seq": 0}
