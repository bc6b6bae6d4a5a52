"""Card tokens: tokenize, and detokenize (payment processors only, with step-up MFA)."""

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from app_stub.api.deps import GuardedRoute, StepUpCode, Svc, guarded
from app_stub.api.schemas import StoredCardIn
from app_stub.rbac import Perm
from app_stub.services import Staff
from app_stub.tokenization import validate_card

router = APIRouter(prefix="/api/cards", tags=["cards"], route_class=GuardedRoute)


@router.post("", status_code=201)
def tokenize(body: StoredCardIn, staff: Annotated[Staff, guarded(Perm.CARDS_TOKENIZE)], svc: Svc) -> dict[str, Any]:
    card = validate_card(body.number, body.exp_month, body.exp_year, svc.auth.now().date())
    return svc.cards.tokenize(staff, card, body.customer_id)


@router.post("/{token}/detokenize")
def detokenize(
    token: Annotated[str, Field(max_length=40)],
    staff: Annotated[Staff, guarded(Perm.CARDS_DETOKENIZE)],
    svc: Svc,
    x_step_up_code: StepUpCode = None,
) -> dict[str, Any]:
    return svc.cards.detokenize(staff, token, x_step_up_code)
