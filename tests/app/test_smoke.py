from apphelpers import CUSTOMER, VISA, Env


def test_flow(env: Env) -> None:
    c = env.staff("clerk", "billing_clerk")
    r = c.post("/api/customers", json=CUSTOMER)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = c.post("/api/invoices", json={"customer_id": cid, "currency": "EUR",
               "lines": [{"description": "Widget", "quantity": 3, "unit_price_minor": 1999, "tax_rate_bp": 2000}]})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    assert c.post(f"/api/invoices/{iid}/issue").status_code == 200
    r = c.post(f"/api/invoices/{iid}/payments", json={"card": {"number": VISA, "exp_month": 12, "exp_year": 2030}},
               headers={"Idempotency-Key": "pay-0001-abc"})
    assert r.status_code == 200, r.text
    print(r.json())
