"""Forms and the one place an API refusal becomes what the person reads: a message against the field
the API named, or a sentence at the top for a rule (422 `rule`) or a state (409), in their language."""
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm

# A rule the API refuses with (422 `rule`), in plain words; the API's own message when it names a rule
# this catalogue does not know yet.
RULES = {
    "application_window": _l("This programme is not taking applications today."),
    "tier_not_held": _l("Your enterprise holds no qualification that this programme funds, valid today. "
                        "Ask the programme office to record your certificate first; if it was recorded "
                        "a moment ago, try again in a minute."),
    "budget_exhausted": _l("The programme's budget is used up: no more vouchers can be issued."),
    "annual_cap": _l("Your enterprise has reached this programme's limit for the year."),
    "not_in_catalogue": _l("This service is not in the programme's catalogue."),
    "barred_item": _l("This service may not be paid from public funds."),
    "agency_unknown": _l("The platform does not know this agency yet."),
    "agency_not_active": _l("This agency is suspended or has closed: it cannot take new orders."),
    "agency_blacklisted": _l("This agency is on a list of serious dishonesty or abnormal operation."),
    "agency_below_rating_line": _l("This agency's credit rating is below the line for public funding."),
    "agency_kind": _l("This agency does not offer this kind of service."),
    "agency_service_scope": _l("This service is outside the agency's registered scope."),
    "related_party": _l("The agency is related to your enterprise, so the order cannot be subsidised."),
    "subsidy_rounds_to_zero": _l("At this price the subsidy would be nothing."),
    "budget_below_issued": _l("The budget cannot be set below what has already been issued."),
    "period_not_over": _l("The evaluation period has not ended yet."),
    "rating_rules_period": _l("No rating rules apply to a period that ends before 1 May 2023."),
    "entry_after_checkpoint": _l("This entry is not yet covered by a signed checkpoint."),
}
CONFLICTS = {
    "illegal_transition": _l("This cannot be done now: it is already %(state)s."),
    "insufficient_balance": _l("The voucher has too little left for this."),
    "unsupported_media_type": _l("This kind of file is not accepted: upload a PDF, JPEG, PNG, OFD or e-invoice XML."),
    "payload_too_large": _l("The file is too large."),
}


def refusal_message(error):
    """What the person reads for a refused request."""
    if error.rule in RULES:
        return str(RULES[error.rule])
    code = error.body.get("error")
    if code == "illegal_transition":
        return str(CONFLICTS[code]) % {"state": error.body.get("state", "")}
    # A service that words its refusal in Chinese too (documents: why this file was refused) is read in
    # it rather than in the general words for the error.
    if error.body.get("message_zh") and str(get_locale()).startswith("zh"):
        return error.body["message_zh"]
    if code in CONFLICTS:
        return str(CONFLICTS[code])
    return error.message


class PortalForm(FlaskForm):
    """Every form: CSRF (Flask-WTF), and `refused_by` to show an API refusal."""
    # The API's field names that differ from the form's, e.g. {"price_fen": "price"}.
    api_fields = {}

    def refused_by(self, error):
        placed = False
        for api_name, messages in error.fields.items():
            field = getattr(self, self.api_fields.get(api_name.split(".")[0], api_name.split(".")[0]), None)
            if field is not None and hasattr(field, "errors"):
                field.errors = list(field.errors) + [m if isinstance(m, str) else str(m) for m in messages]
                placed = True
        if not placed:
            self.form_errors.append(refusal_message(error))

    def error_summary(self):
        """(message, field id) pairs for the summary at the top of the page; id None for the form."""
        items = [(m, None) for m in self.form_errors]
        for field in self:
            for message in field.errors if isinstance(field.errors, list) else []:
                items.append((f"{field.label.text}: {message}", field.id))
        return items
