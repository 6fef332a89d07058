"""An agency's work: the orders placed with it, delivering with materials, claims and their state, its
own rating with the evaluation behind it."""
import hashlib

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from wtforms import StringField
from wtforms.validators import DataRequired, Length, Optional

from services.portal.clients import ApiRefused
from services.portal.clients.documents import documents_api
from services.portal.clients.providers import providers_api
from services.portal.clients.vouchers import vouchers_api
from services.portal.forms import PortalForm, refusal_message
from services.portal.signin import person_required

bp = Blueprint("agency", __name__, url_prefix="/agency")


class DeliverForm(PortalForm):
    contract_ref = StringField(_l("Contract number"), validators=[DataRequired(_l("Enter the contract number")), Length(max=128)])
    invoice_no = StringField(_l("Invoice number"), validators=[DataRequired(_l("Enter the invoice number")), Length(max=64)])
    payment_proof_ref = StringField(_l("Proof of payment reference"),
                                    validators=[DataRequired(_l("Enter the payment reference")), Length(max=128)])
    official_no = StringField(_l("Official number (optional)"), validators=[Optional(), Length(max=64)])
    deliverable = FileField(_l("The deliverable (PDF, JPEG or PNG)"))
    api_fields = {"deliverable_sha256": "deliverable", "file": "deliverable", "documents": "deliverable"}


@bp.route("")
@person_required("agency")
def home():
    orders = vouchers_api.get_orders()
    return render_template("agency/home.html", orders=orders)


@bp.route("/orders/<order_id>", methods=["GET", "POST"])
@person_required("agency")
def order(order_id):
    found = vouchers_api.get_order(order_id)
    form = DeliverForm()
    if form.validate_on_submit():
        upload = form.deliverable.data
        if not upload or not upload.filename:
            form.deliverable.errors = [_("Choose the deliverable's file")]
        else:
            content = upload.read()
            evidence = {"contract_ref": form.contract_ref.data, "invoice_no": form.invoice_no.data,
                        "payment_proof_ref": form.payment_proof_ref.data, "official_no": form.official_no.data or None}
            try:
                document = documents_api.upload_document(order_id, "deliverable", upload.filename, content,
                                                         upload.mimetype)
                if document:  # stored; the delivery names it and the ledger gets the server's SHA-256
                    evidence["documents"] = {"deliverable": document["document_id"]}
                else:  # no documents service here: the hash of the very file, not one typed by a person
                    evidence["deliverable_sha256"] = hashlib.sha256(content).hexdigest()
                vouchers_api.deliver_order(order_id, evidence)
            except ApiRefused as exc:
                form.refused_by(exc)
            else:
                flash(_("Delivery recorded. The enterprise is asked to confirm it."))
                return redirect(url_for("agency.order", order_id=order_id))
    return render_template("agency/order.html", order=found, form=form,
                           documents=documents_api.documents_of_order(order_id))


@bp.route("/orders/<order_id>/claim", methods=["POST"])
@person_required("agency")
def claim(order_id):
    try:
        vouchers_api.submit_claim(order_id)
    except ApiRefused as exc:
        flash(refusal_message(exc))
    else:
        flash(_("Claim submitted. The programme office reviews it before paying."))
    return redirect(url_for("agency.order", order_id=order_id))


@bp.route("/claims")
@person_required("agency")
def claims():
    return render_template("agency/claims.html", claims=vouchers_api.get_claims())


@bp.route("/rating")
@person_required("agency")
def rating():
    agency_id = g.person["org"]
    return render_template("agency/rating.html", rating=providers_api.get_rating(agency_id),
                           evaluations=providers_api.get_evaluations(agency_id))
