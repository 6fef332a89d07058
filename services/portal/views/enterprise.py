"""An enterprise's work: its tiers and vouchers, applying, choosing an agency, ordering, confirming or
disputing a delivery, claiming where the enterprise is the payee, its alerts."""
import re
import uuid
from datetime import date, timedelta
from decimal import Decimal

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import DateField, HiddenField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from services.portal.clients import ApiError, ApiRefused, concurrently
from services.portal.clients.documents import documents_api
from services.portal.clients.enterprises import enterprises_api
from services.portal.clients.providers import providers_api
from services.portal.clients.vouchers import vouchers_api
from services.portal.formatting import yuan
from services.portal.forms import PortalForm, refusal_message
from services.portal.signin import person_required

bp = Blueprint("enterprise", __name__, url_prefix="/enterprise")
OPEN_ORDER_STATES = ("placed", "delivered", "disputed", "confirmed")
YUAN = re.compile(r"^\d{1,9}(\.\d{1,2})?$")


def fen_from_yuan(text):
    """'1,200.5' → 120050; more than two decimals, a negative, an exponent or no number is an error, never
    rounded."""
    plain = str(text or "").replace(",", "").replace("¥", "").strip()
    if not YUAN.match(plain):
        raise ValidationError(_("Enter an amount in yuan, like 12000.00"))
    amount = Decimal(plain)
    if amount <= 0 or amount > Decimal("100000000"):
        raise ValidationError(_("Enter an amount in yuan, more than 0, with at most two decimals"))
    return int(amount * 100)


class ApplyForm(PortalForm):
    programme = RadioField(_l("Programme"), validators=[DataRequired(_l("Choose a programme"))], choices=[])
    attempt = HiddenField()  # one application however often the button is pressed (Idempotency-Key)
    api_fields = {"programme_id": "programme"}


class OrderForm(PortalForm):
    price = StringField(_l("Price agreed with the agency, in yuan"), validators=[DataRequired(_l("Enter the price"))])
    deliver_by = DateField(_l("Deliver by"), validators=[DataRequired(_l("Enter the date the agency will deliver by"))])
    attempt = HiddenField()
    api_fields = {"price_fen": "price"}

    def validate_price(self, field):
        self.price_fen = fen_from_yuan(field.data)


class RegisterForm(PortalForm):
    name = StringField(_l("Enterprise name, as on its business licence"),
                       validators=[DataRequired(_l("Enter the enterprise's name")), Length(max=200)])
    region = StringField(_l("Region code"), validators=[DataRequired(_l("Enter the region code")), Length(max=6)])
    industry = StringField(_l("Industry code (GB/T 4754-2017)"), validators=[DataRequired(_l("Enter the industry code")),
                                                                             Length(max=5)])
    size = RadioField(_l("Size"), choices=[("micro", _l("micro")), ("small", _l("small")), ("medium", _l("medium"))],
                      validators=[DataRequired(_l("Choose the size"))])


class DisputeForm(PortalForm):
    reason = TextAreaField(_l("What is wrong with the delivery"),
                           validators=[DataRequired(_l("Say what is wrong")), Length(max=500)])


def enterprise_id():
    return g.person["org"]


@bp.route("")
@person_required("enterprise")
def home():
    eid = enterprise_id()
    if not eid:  # a self-registered account, not yet bound to its enterprise
        return redirect(url_for("enterprise.register"))
    enterprise, tiers, vouchers, orders, alerts = concurrently(
        lambda: enterprises_api.get_enterprise(eid), lambda: enterprises_api.get_tiers(eid),
        vouchers_api.get_vouchers, vouchers_api.get_orders, lambda: enterprises_api.get_notifications(eid, unread=True))
    return render_template("enterprise/home.html", enterprise=enterprise, tiers=tiers, vouchers=vouchers,
                           orders=[o for o in orders if o["state"] in OPEN_ORDER_STATES], alerts=alerts)


@bp.route("/register", methods=["GET", "POST"])
@person_required("enterprise")
def register():
    """The enterprise a self-registered account claims (its credit code, from sign-up): registered here,
    then verified by an officer, after which the account acts for it."""
    claimed = g.person.get("claimed")
    if g.person["org"] or not claimed:
        return redirect(url_for("enterprise.home"))
    try:
        registered = enterprises_api.get_enterprise(claimed)
    except ApiError as exc:
        if exc.status != 404:
            raise
        registered = None
    form = RegisterForm()
    if registered is None and form.validate_on_submit():
        try:
            registered = enterprises_api.register_enterprise({
                "credit_code": claimed, "name": form.name.data, "region": form.region.data,
                "industry": form.industry.data, "size": form.size.data})
        except ApiRefused as exc:
            form.refused_by(exc)
    return render_template("enterprise/register.html", form=form, claimed=claimed, registered=registered)


@bp.route("/apply", methods=["GET", "POST"])
@person_required("enterprise")
def apply():
    programmes = [p for p in vouchers_api.get_programmes(status="open")]
    form = ApplyForm(programme=request.args.get("programme"))
    form.programme.choices = [(p["programme_id"], p["name"]) for p in programmes]
    if not form.attempt.data:
        form.attempt.data = uuid.uuid4().hex
    if form.validate_on_submit():
        try:
            voucher = vouchers_api.apply_for_voucher(form.programme.data, idempotency_key=f"apply-{form.attempt.data}")
        except ApiRefused as exc:
            form.refused_by(exc)
            form.attempt.data = uuid.uuid4().hex  # a refusal frees the key; a new try is judged afresh
        else:
            flash(_("Your voucher is issued: %(amount)s.", amount=yuan(voucher["face_value_fen"])))
            return redirect(url_for("enterprise.voucher", voucher_id=voucher["voucher_id"]))
    return render_template("enterprise/apply.html", form=form, programmes=programmes)


@bp.route("/vouchers/<voucher_id>")
@person_required("enterprise")
def voucher(voucher_id):
    found = vouchers_api.get_voucher(voucher_id)
    return render_template("enterprise/voucher.html", voucher=found,
                           programme=vouchers_api.get_programme(found["programme_id"]),
                           orders=vouchers_api.get_orders(voucher_id=voucher_id))


@bp.route("/vouchers/<voucher_id>/agencies")
@person_required("enterprise")
def choose_agency(voucher_id):
    found = vouchers_api.get_voucher(voucher_id)
    programme = vouchers_api.get_programme(found["programme_id"])
    service = request.args.get("service")
    items = {i["service_code"]: i for i in programme["catalogue"]}
    if service not in items:
        return render_template("enterprise/choose_service.html", voucher=found, programme=programme)
    recommended = providers_api.recommend_agencies(service, region=programme["region"][:2])
    return render_template("enterprise/choose_agency.html", voucher=found, programme=programme, item=items[service],
                           recommended=recommended)


@bp.route("/vouchers/<voucher_id>/order", methods=["GET", "POST"])
@person_required("enterprise")
def order(voucher_id):
    found = vouchers_api.get_voucher(voucher_id)
    programme = vouchers_api.get_programme(found["programme_id"])
    items = {i["service_code"]: i for i in programme["catalogue"]}
    service, agency_id = request.args.get("service"), request.args.get("agency")
    if service not in items or not agency_id:
        abort(404)
    agency = providers_api.get_agency(agency_id)
    form = OrderForm()
    if request.method == "GET":
        form.deliver_by.data = date.today() + timedelta(days=60)
        form.attempt.data = uuid.uuid4().hex
    if form.validate_on_submit():
        try:
            placed = vouchers_api.place_order(voucher_id, agency_id, service, form.price_fen,
                                              form.deliver_by.data.isoformat(),
                                              idempotency_key=f"order-{form.attempt.data}")
        except ApiRefused as exc:
            form.refused_by(exc)
            form.attempt.data = uuid.uuid4().hex
        else:
            flash(_("Order placed. The voucher pays %(subsidy)s; you pay the agency %(copay)s.",
                    subsidy=yuan(placed["subsidy_fen"]), copay=yuan(placed["copay_fen"])))
            return redirect(url_for("enterprise.order_page", order_id=placed["order_id"]))
    return render_template("enterprise/order_form.html", voucher=found, item=items[service], agency=agency, form=form)


@bp.route("/orders/<order_id>", methods=["GET", "POST"])
@person_required("enterprise")
def order_page(order_id):
    found = vouchers_api.get_order(order_id)
    form = DisputeForm()
    if form.validate_on_submit():
        try:
            vouchers_api.dispute_delivery(order_id, form.reason.data)
        except ApiRefused as exc:
            form.refused_by(exc)
        else:
            flash(_("Your dispute is recorded. The programme office will decide it."))
            return redirect(url_for("enterprise.order_page", order_id=order_id))
    programme = vouchers_api.get_programme(found["programme_id"])
    return render_template("enterprise/order.html", order=found, form=form, programme=programme,
                           agency=providers_api.get_agency(found["agency_id"]),
                           documents=documents_api.documents_of_order(order_id))


@bp.route("/orders/<order_id>/confirm", methods=["POST"])
@person_required("enterprise")
def confirm(order_id):
    return order_step(order_id, lambda: vouchers_api.confirm_delivery(order_id), _("Delivery confirmed."))


@bp.route("/orders/<order_id>/claim", methods=["POST"])
@person_required("enterprise")
def claim(order_id):
    return order_step(order_id, lambda: vouchers_api.submit_claim(order_id),
                      _("Claim submitted. The programme office reviews it before paying."))


def order_step(order_id, call, done):
    try:
        call()
    except ApiRefused as exc:
        flash(refusal_message(exc))
    else:
        flash(done)
    return redirect(url_for("enterprise.order_page", order_id=order_id))


@bp.route("/alerts", methods=["GET", "POST"])
@person_required("enterprise")
def alerts():
    eid = enterprise_id()
    if request.method == "POST":
        PortalForm().validate_on_submit()
        enterprises_api.mark_notification_read(eid, request.form.get("notification", ""))
        return redirect(url_for("enterprise.alerts"))
    return render_template("enterprise/alerts.html", alerts=enterprises_api.get_notifications(eid))
