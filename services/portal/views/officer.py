"""A programme officer's work: programmes (create, change terms, open, close; budget per fund source),
enterprises and their qualifications, agency evaluations, the claims review queue with each claim's
materials beside it, approving, rejecting with a reason, recording payment."""
from datetime import date

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import (DateField, FieldList, Form, FormField, IntegerField, SelectField, SelectMultipleField,
                     StringField, TextAreaField)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError

from services.portal.clients import ApiRefused, concurrently
from services.portal.clients.documents import documents_api
from services.portal.clients.enterprises import enterprises_api
from services.portal.clients.providers import providers_api
from services.portal.clients.vouchers import vouchers_api
from services.portal.formatting import MODELS, TIERS
from services.portal.forms import PortalForm, refusal_message
from services.portal.signin import person_required
from services.portal.views.enterprise import fen_from_yuan

bp = Blueprint("officer", __name__, url_prefix="/officer")
KINDS = (("patent", _l("patent")), ("trademark", _l("trademark")))


def yuan_to_fen(field, required=True):
    if not field.data and not required:
        return None
    return fen_from_yuan(field.data)


class TierRow(Form):
    tier = SelectField(_l("Tier"), choices=[("", "—")] + [(k, v) for k, v in TIERS.items()], validators=[Optional()])
    face_value = StringField(_l("Voucher value (yuan)"), validators=[Optional()])
    annual_cap = StringField(_l("Limit per enterprise per year (yuan)"), validators=[Optional()])


class ItemRow(Form):
    service_code = StringField(_l("Service code"), validators=[Optional(), Length(max=16)])
    name = StringField(_l("Service name"), validators=[Optional(), Length(max=200)])
    ratio = IntegerField(_l("Share paid (%)"), validators=[Optional(), NumberRange(1, 100)])
    cap = StringField(_l("At most (yuan)"), validators=[Optional()])
    kinds = SelectMultipleField(_l("Agency kinds"), choices=KINDS, validators=[Optional()])
    barred_reason = StringField(_l("Not funded because (leave empty if funded)"), validators=[Optional(), Length(max=500)])


class ProgrammeForm(PortalForm):
    name = StringField(_l("Name"), validators=[DataRequired(_l("Enter the programme's name")), Length(max=200)])
    region = StringField(_l("Region code"), validators=[DataRequired(_l("Enter the region code")),
                                                        Regexp(r"^\d{6}$", message=_l("Six digits, like 331021"))])
    fund_source = StringField(_l("Fund source"), validators=[DataRequired(_l("Enter the fund source")), Length(max=64)])
    budget = StringField(_l("Budget (yuan)"), validators=[DataRequired(_l("Enter the budget"))])
    opens_on = DateField(_l("Applications open on"), validators=[DataRequired(_l("Enter the opening date"))])
    closes_on = DateField(_l("Applications close on"), validators=[DataRequired(_l("Enter the closing date"))])
    validity_days = IntegerField(_l("Days a voucher stays valid"), validators=[DataRequired(_l("Enter a number of days")),
                                                                               NumberRange(1, 3660)])
    redemption_model = SelectField(_l("Who claims the subsidy"), choices=[(k, v) for k, v in MODELS.items()])
    tiers = FieldList(FormField(TierRow), min_entries=3, max_entries=3)
    catalogue = FieldList(FormField(ItemRow), min_entries=5, max_entries=5)
    api_fields = {"budget_fen": "budget"}

    def terms(self):
        """The API's body, or None with the form's errors set."""
        try:
            tiers = [{"tier": row.tier.data, "face_value_fen": yuan_to_fen(row.face_value),
                      "annual_cap_fen": yuan_to_fen(row.annual_cap)} for row in self.tiers if row.tier.data]
            catalogue = [{"service_code": row.service_code.data.strip(), "name": row.form.name.data.strip(),
                          "subsidy_ratio_bp": (row.ratio.data or 0) * 100, "item_cap_fen": yuan_to_fen(row.cap),
                          "agency_kinds": row.kinds.data or ["patent"], "barred_reason": row.barred_reason.data or None}
                         for row in self.catalogue if row.service_code.data]
            budget = yuan_to_fen(self.budget)
        except ValidationError as exc:
            self.form_errors.append(str(exc))
            return None
        if not tiers:
            self.form_errors.append(_("Fund at least one tier"))
        if not catalogue:
            self.form_errors.append(_("List at least one service"))
        if self.form_errors:
            return None
        return {"name": self.name.data, "region": self.region.data, "fund_source": self.fund_source.data,
                "budget_fen": budget, "opens_on": self.opens_on.data.isoformat(),
                "closes_on": self.closes_on.data.isoformat(), "validity_days": self.validity_days.data,
                "redemption_model": self.redemption_model.data, "tiers": tiers, "catalogue": catalogue}

    def fill(self, programme):
        def plain(fen):
            return f"{fen // 100}.{fen % 100:02d}"
        self.name.data, self.region.data, self.fund_source.data = programme["name"], programme["region"], programme["fund_source"]
        self.budget.data = plain(programme["budget_fen"])
        self.opens_on.data = date.fromisoformat(programme["opens_on"])
        self.closes_on.data = date.fromisoformat(programme["closes_on"])
        self.validity_days.data, self.redemption_model.data = programme["validity_days"], programme["redemption_model"]
        for row, tier in zip(self.tiers, programme["tiers"]):
            row.tier.data, row.face_value.data, row.annual_cap.data = (
                tier["tier"], plain(tier["face_value_fen"]), plain(tier["annual_cap_fen"]))
        for row, item in zip(self.catalogue, programme["catalogue"]):
            row.service_code.data, row.form.name.data = item["service_code"], item["name"]
            row.ratio.data, row.cap.data = item["subsidy_ratio_bp"] // 100, plain(item["item_cap_fen"])
            row.kinds.data, row.barred_reason.data = item["agency_kinds"], item.get("barred_reason") or ""


class QualificationForm(PortalForm):
    tier = SelectField(_l("Tier"), choices=[(k, v) for k, v in TIERS.items()])
    level = SelectField(_l("Level"), choices=[("national", _l("national")), ("provincial", _l("provincial")),
                                              ("municipal", _l("municipal"))])
    certificate_no = StringField(_l("Certificate number"), validators=[DataRequired(_l("Enter the certificate number")),
                                                                        Length(max=64)])
    issuing_authority = StringField(_l("Issued by"), validators=[DataRequired(_l("Enter who issued it")), Length(max=128)])
    valid_from = DateField(_l("Valid from"), validators=[DataRequired(_l("Enter the first valid day"))])
    valid_to = DateField(_l("Valid to"), validators=[DataRequired(_l("Enter the last valid day"))])


class VerificationForm(PortalForm):
    method = SelectField(_l("How you checked who registered it"), choices=[
        ("business_licence", _l("electronic business licence")), ("legal_person_login", _l("legal person's sign-in")),
        ("documents", _l("papers"))])
    reference = StringField(_l("Reference of the check"), validators=[DataRequired(_l("Enter the check's reference")),
                                                                        Length(max=128)])


class EvaluationForm(PortalForm):
    period_from = DateField(_l("Period from"), validators=[DataRequired(_l("Enter the first day of the period"))])
    period_to = DateField(_l("Period to"), validators=[DataRequired(_l("Enter the last day of the period"))])
    abnormal_filings = IntegerField(_l("Points deducted for abnormal patent filings (0–40)"),
                                    validators=[Optional(), NumberRange(0, 40)])
    administrative_penalty = IntegerField(_l("Administrative penalties (count)"), validators=[Optional(), NumberRange(0, 100)])
    honour = IntegerField(_l("Honours received (count)"), validators=[Optional(), NumberRange(0, 100)])
    note = TextAreaField(_l("Evidence and notes"), validators=[Optional(), Length(max=1000)])

    def body(self):
        deductions = []
        if self.abnormal_filings.data:
            deductions.append({"indicator": "abnormal_filings", "points": self.abnormal_filings.data})
        if self.administrative_penalty.data:
            deductions.append({"indicator": "administrative_penalty", "count": self.administrative_penalty.data})
        bonuses = [{"indicator": "honour", "count": self.honour.data}] if self.honour.data else []
        return {"period_from": self.period_from.data.isoformat(), "period_to": self.period_to.data.isoformat(),
                "deductions": deductions, "bonuses": bonuses, "note": self.note.data or None}


class RejectForm(PortalForm):
    reason = TextAreaField(_l("Why the claim is rejected"), validators=[DataRequired(_l("Give the reason")), Length(max=500)])


class PayForm(PortalForm):
    payment_ref = StringField(_l("Payment reference"), validators=[DataRequired(_l("Enter the treasury payment reference")),
                                                                   Length(max=64)])
    paid_on = DateField(_l("Paid on"), validators=[Optional()])


def refused(exc):
    flash(refusal_message(exc))


@bp.route("")
@person_required("officer")
def home():
    programmes = vouchers_api.get_programmes()
    # From the programme list alone: a programme's balances sum every voucher it issued (one scan each on
    # FerretDB), so the five buckets are on the programme's own page, not summed here for all of them.
    by_source = {}
    for p in programmes:
        if p["status"] != "draft":
            source = by_source.setdefault(p["fund_source"], {"budget_fen": 0, "remaining_fen": 0})
            source["budget_fen"] += p["budget_fen"]
            source["remaining_fen"] += p["remaining_fen"]
    return render_template("officer/home.html", programmes=programmes, by_source=by_source)


@bp.route("/programmes/new", methods=["GET", "POST"])
@person_required("officer")
def new_programme():
    form = ProgrammeForm()
    if form.validate_on_submit() and (terms := form.terms()):
        try:
            created = vouchers_api.create_programme(terms)
        except ApiRefused as exc:
            form.refused_by(exc)
        else:
            flash(_("Programme created as a draft. Open it when it should take applications."))
            return redirect(url_for("officer.programme", programme_id=created["programme_id"]))
    return render_template("officer/programme_form.html", form=form, programme=None)


@bp.route("/programmes/<programme_id>")
@person_required("officer")
def programme(programme_id):
    found = vouchers_api.get_programme(programme_id)
    # The buckets as the vouchers service last recounted them (every few seconds, and when): summing
    # every voucher takes seconds at 10,000 of them, so the exact count now is a click away, not the default.
    if request.args.get("count") == "now":
        balance = vouchers_api.get_programme_balances(programme_id)
    else:
        balance = vouchers_api.get_programme_balances_recounted(programme_id)
    return render_template("officer/programme.html", programme=found, balance=balance)


@bp.route("/programmes/<programme_id>/terms", methods=["GET", "POST"])
@person_required("officer")
def edit_programme(programme_id):
    found = vouchers_api.get_programme(programme_id)
    form = ProgrammeForm()
    if request.method == "GET":
        form.fill(found)
    if form.validate_on_submit() and (terms := form.terms()):
        try:
            vouchers_api.change_programme(programme_id, terms)
        except ApiRefused as exc:
            form.refused_by(exc)
        else:
            flash(_("Terms changed. Vouchers already issued keep the terms they were issued under."))
            return redirect(url_for("officer.programme", programme_id=programme_id))
    return render_template("officer/programme_form.html", form=form, programme=found)


@bp.route("/programmes/<programme_id>/<any(open, close):step>", methods=["POST"])
@person_required("officer")
def programme_step(programme_id, step):
    try:
        if step == "open":
            vouchers_api.open_programme(programme_id)
            flash(_("The programme is open for applications."))
        else:
            vouchers_api.close_programme(programme_id)
            flash(_("The programme is closed to new applications; issued vouchers run on."))
    except ApiRefused as exc:
        refused(exc)
    return redirect(url_for("officer.programme", programme_id=programme_id))


@bp.route("/enterprises")
@person_required("officer")
def enterprises():
    q = request.args.get("q") or None
    found = enterprises_api.get_enterprises(q=q)
    return render_template("officer/enterprises.html", q=q or "", waiting=[e for e in found if not e["verified"]],
                           enterprises=[e for e in found if e["verified"]])


@bp.route("/enterprises/<enterprise_id>", methods=["GET", "POST"])
@person_required("officer")
def enterprise(enterprise_id):
    found = enterprises_api.get_enterprise(enterprise_id)
    form, verification = QualificationForm(prefix="q"), VerificationForm(prefix="v")
    if request.form.get("action") == "verify" and verification.validate_on_submit():
        try:
            enterprises_api.verify_enterprise(enterprise_id, verification.method.data, verification.reference.data)
        except ApiRefused as exc:
            verification.refused_by(exc)
        else:
            flash(_("Enterprise verified: its account now acts for it."))
            return redirect(url_for("officer.enterprise", enterprise_id=enterprise_id))
    elif request.form.get("action") == "qualify" and form.validate_on_submit():
        body = {k: getattr(form, k).data for k in ("tier", "level", "certificate_no", "issuing_authority")}
        body.update(valid_from=form.valid_from.data.isoformat(), valid_to=form.valid_to.data.isoformat())
        try:
            enterprises_api.grant_qualification(enterprise_id, body)
        except ApiRefused as exc:
            form.refused_by(exc)
        else:
            flash(_("Qualification recorded."))
            return redirect(url_for("officer.enterprise", enterprise_id=enterprise_id))
    return render_template("officer/enterprise.html", enterprise=found, form=form, verification=verification,
                           qualifications=enterprises_api.get_qualifications(enterprise_id))


@bp.route("/agencies")
@person_required("officer")
def agencies():
    return render_template("officer/agencies.html", agencies=providers_api.get_agencies())


@bp.route("/agencies/<agency_id>", methods=["GET", "POST"])
@person_required("officer")
def agency(agency_id):
    form = EvaluationForm()
    if form.validate_on_submit():
        try:
            result = providers_api.record_evaluation(agency_id, form.body())
        except ApiRefused as exc:
            form.refused_by(exc)
        else:
            flash(_("Evaluation recorded: %(score)s points, level %(level)s.", score=result["score"], level=result["level"]))
            return redirect(url_for("officer.agency", agency_id=agency_id))
    return render_template("officer/agency.html", rating=providers_api.get_rating(agency_id), form=form,
                           evaluations=providers_api.get_evaluations(agency_id))


@bp.route("/claims")
@person_required("officer")
def claims():
    submitted, approved = concurrently(lambda: vouchers_api.get_claims(state="submitted"),
                                       lambda: vouchers_api.get_claims(state="approved"))
    return render_template("officer/claims.html", submitted=submitted, approved=approved)


@bp.route("/claims/<claim_id>", methods=["GET", "POST"])
@person_required("officer")
def claim(claim_id):
    found = vouchers_api.get_claim(claim_id)
    reject_form, pay_form = RejectForm(prefix="reject"), PayForm(prefix="pay")
    action = request.form.get("action")
    try:
        if action == "approve" and PortalForm().validate_on_submit():
            vouchers_api.approve_claim(claim_id)
            flash(_("Claim approved. Record the payment once the treasury has paid."))
            return redirect(url_for("officer.claim", claim_id=claim_id))
        if action == "reject" and reject_form.validate_on_submit():
            vouchers_api.reject_claim(claim_id, reject_form.reason.data)
            flash(_("Claim rejected; the held subsidy goes back to the voucher."))
            return redirect(url_for("officer.claims"))
        if action == "pay" and pay_form.validate_on_submit():
            vouchers_api.record_payment(claim_id, pay_form.payment_ref.data,
                                        pay_form.paid_on.data.isoformat() if pay_form.paid_on.data else None)
            flash(_("Payment recorded."))
            return redirect(url_for("officer.claims"))
    except ApiRefused as exc:
        (reject_form if action == "reject" else pay_form if action == "pay" else reject_form).refused_by(exc)
    order = vouchers_api.get_order(found["order_id"])
    documents = documents_api.documents_of_order(found["order_id"])
    for document in documents or []:
        document["ledger_check"] = documents_api.verify_document(document["document_id"])
    return render_template("officer/claim.html", claim=found, order=order, documents=documents,
                           reject_form=reject_form, pay_form=pay_form,
                           agency=providers_api.get_agency(order["agency_id"]),
                           enterprise=enterprises_api.get_enterprise(order["enterprise_id"]))
