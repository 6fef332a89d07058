"""Each person's work in the portal, end to end against the running stack, as they click through it and
read what the page says. Tests run in file order: the officer's programme is the one the enterprise then
applies to, orders under, and the agency, officer, public and auditor follow that voucher."""
import hashlib
import re
import time
import uuid

from playwright.sync_api import expect

from tests import document_samples
from tests.portal.conftest import api_json

RUN = uuid.uuid4().hex[:6]
PROGRAMME = f"门户测试服务券 {RUN}"
GIANTS_ONLY = f"门户测试小巨人专项 {RUN}"
ENTERPRISE = "91350100M000100Y43"  # demo-enterprise: holds 专精特新 (srdi_sme)
OTHER_ENTERPRISE = "91310115MA1K3YJ15R"  # another demo enterprise, holds 创新型 (innovative_sme)
# The deliverables an agency uploads: real PDFs (the documents service reads every page), unique per run.
DELIVERABLE = document_samples.pdf(text=f"Patent navigation report {RUN}")
SECOND_DELIVERABLE = document_samples.pdf(text=f"Patent search report {RUN}")
journey = {}


def flash(visitor):
    return visitor.page.get_by_role("status").first.inner_text()


def until(check, seconds=20):
    """Read models and the ledger follow events asynchronously: a page may need a moment to show them."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_anyone_reads_programmes_the_agency_directory_and_the_public_notice(visitor):
    visitor.goto("/")
    assert visitor.heading() == "知识产权服务券项目"
    visitor.page.get_by_role("link", name="玉环市知识产权服务券（2026 演示）").click()
    visitor.check()
    visitor.screenshot("programme")
    text = visitor.text()
    assert "专利导航分析" in text and "¥10,000.00" in text  # the catalogue with its cap in yuan
    assert "不予资助：国知局2021年通知" in text  # a barred item says why

    visitor.page.get_by_role("link", name="服务机构名录").click()
    visitor.check()
    row = visitor.page.get_by_role("row", name=re.compile("玉环明诚专利代理事务所"))
    expect(row).to_contain_text("A")
    visitor.page.get_by_role("link", name="北京速达知识产权代理有限公司").click()
    visitor.check()
    text = visitor.text()
    assert "等级依据" in text and "基础分" in text and "否" in text  # level C, why, and not eligible

    visitor.page.get_by_role("link", name="资助公示").click()
    visitor.check()
    visitor.page.get_by_role("link", name="玉环市知识产权服务券（2026 演示）").click()
    visitor.check()
    row = visitor.page.get_by_role("row", name=re.compile("福州闽光精密制造有限公司"))
    expect(row).to_contain_text("¥6,000.00")
    row.get_by_role("link").click()
    visitor.check()
    assert "claim.paid" in visitor.text() or "claim.approved" in visitor.text()
    assert "自行离线核验" in visitor.text() or "暂未包含" in visitor.text()


def test_every_page_switches_to_english_and_back(visitor):
    visitor.goto("/agencies")
    visitor.page.get_by_role("link", name="English").click()
    visitor.check()
    assert visitor.heading() == "Agency directory"
    expect(visitor.page.get_by_role("link", name="Public notice of subsidies")).to_be_visible()
    visitor.goto("/")
    assert visitor.heading() == "IP service voucher programmes"
    visitor.page.get_by_role("link", name="中文").click()
    assert visitor.heading() == "知识产权服务券项目"


def test_an_unknown_page_and_a_private_page_signed_out(visitor):
    visitor.goto("/programmes/no-such-programme")
    assert visitor.heading() == "页面不存在"
    visitor.goto("/officer")
    assert visitor.heading() == "登录"  # a private page asks to sign in first


def test_officer_creates_and_opens_programmes(people):
    officer = people("officer")
    for name, tiers in ((PROGRAMME, [("专精特新中小企业", "20000"), ("创新型中小企业", "10000")]),
                        (GIANTS_ONLY, [("专精特新“小巨人”企业", "50000")])):
        officer.goto("/officer")
        officer.page.get_by_role("link", name="新建项目").click()
        page = officer.page
        page.get_by_label("名称").first.fill(name)
        page.get_by_label("行政区划代码").fill("331021")
        page.get_by_label("资金来源").fill("门户测试专项资金")
        page.get_by_label("预算（元）").fill("1000000")
        page.get_by_label("申领开始日期").fill("2026-01-01")
        page.get_by_label("申领截止日期").fill("2027-12-31")
        page.get_by_label("服务券有效天数").fill("365")
        page.get_by_label("兑付方式").select_option(label="机构兑付（由服务机构申请兑付）")
        for i, (tier, value) in enumerate(tiers):
            page.get_by_label("梯度").nth(i).select_option(label=tier)
            page.get_by_label("服务券面额（元）").nth(i).fill(value)
            page.get_by_label("每家企业年度上限（元）").nth(i).fill(value)
        page.get_by_label("服务代码").first.fill("PAT-01")
        page.get_by_label("服务名称").first.fill("专利导航分析")
        page.get_by_label("资助比例（%）").first.fill("50")
        page.get_by_label("最高金额（元）").first.fill("8000")
        page.get_by_label("机构类型").first.select_option(["patent"])
        page.get_by_role("button", name="创建项目").click()
        officer.check()
        assert "项目已创建为草稿" in flash(officer)
        page.get_by_role("button", name="开始受理申领").click()
        officer.check()
        assert "项目已开始受理申领" in flash(officer)
        journey.setdefault("programmes", {})[name] = page.url.rsplit("/", 1)[1]
    officer.goto("/officer")
    assert "门户测试专项资金" in officer.text()  # its budget gauge, per fund source
    officer.screenshot("officer-programmes")


def test_an_officer_form_names_what_is_wrong_at_the_top(people):
    officer = people("officer")
    officer.goto("/officer/programmes/new")
    officer.page.get_by_label("预算（元）").fill("12.345")
    officer.page.get_by_role("button", name="创建项目").click()
    officer.check()
    summary = officer.page.get_by_role("alert")
    expect(summary).to_contain_text("出现问题")
    summary.get_by_role("link", name=re.compile("名称")).click()  # each problem links to its field
    expect(officer.page.get_by_label("名称").first).to_be_focused()


def test_officer_sees_the_verification_queue_and_an_enterprises_qualifications(people):
    officer = people("officer")
    officer.goto("/officer/enterprises")
    expect(officer.page.get_by_role("table", name="待核验")).to_be_visible()
    officer.page.get_by_role("table", name="已注册企业").get_by_role("link", name="福州闽光精密制造有限公司").click()
    officer.check()
    text = officer.text()
    assert "闽专精特新〔2025〕0117" in text and "已核验" in text
    assert "核验注册人身份" not in text  # verified already: no verification form


def test_enterprise_is_refused_in_plain_words_then_gets_a_voucher_and_orders(people):
    enterprise = people("enterprise")
    enterprise.goto("/enterprise")
    text = enterprise.text()
    assert "专精特新中小企业" in text and "2027-12-31" in text  # its tier and when it expires

    enterprise.page.get_by_role("link", name="申领服务券").first.click()
    enterprise.page.get_by_label(GIANTS_ONLY).check()
    enterprise.page.get_by_role("button", name="申领").click()
    enterprise.check()
    expect(enterprise.page.get_by_role("alert")).to_contain_text("贵企业今天没有本项目支持的有效梯度资质")
    enterprise.screenshot("enterprise-refused")

    enterprise.page.get_by_label(PROGRAMME).check()
    enterprise.page.get_by_role("button", name="申领").click()
    enterprise.check()
    assert "服务券已发放：¥20,000.00" in flash(enterprise)
    journey["voucher"] = enterprise.page.url.rsplit("/", 1)[1]
    enterprise.page.get_by_role("link", name="使用本券购买服务").click()
    enterprise.page.get_by_label(re.compile("专利导航分析")).check()
    enterprise.page.get_by_role("button", name="继续").click()
    enterprise.check()
    first = enterprise.page.get_by_role("listitem").filter(has_text="玉环明诚专利代理事务所")
    expect(first).to_contain_text("推荐理由")
    expect(first).to_contain_text("A")
    assert "北京速达" not in enterprise.text()  # below the rating line: not recommended
    first.get_by_role("link", name="选择玉环明诚专利代理事务所").click()
    enterprise.page.get_by_label("与机构约定的价格（元）").fill("12000.00")
    enterprise.page.get_by_role("button", name="下单").click()
    enterprise.check()
    assert "服务券支付 ¥6,000.00，您需向机构支付 ¥6,000.00" in flash(enterprise)
    journey["order"] = enterprise.page.url.rsplit("/", 1)[1]
    enterprise.goto("/enterprise")
    assert journey["order"] in enterprise.text()  # an open order on the home page
    enterprise.screenshot("enterprise-home")


def test_enterprise_gets_the_403_page_for_another_enterprises_voucher(people, base_url):
    from scripts.keycloak import Keycloak, Tokens
    token = Tokens(Keycloak())("enterprise", OTHER_ENTERPRISE)
    theirs = api_json(base_url, "/api/v1/vouchers", token, "POST",
                      {"programme_id": journey["programmes"][PROGRAMME]})
    enterprise = people("enterprise")
    enterprise.goto(f"/enterprise/vouchers/{theirs['voucher_id']}")
    assert enterprise.heading() == "您无权查看此页面"
    assert "¥10,000.00" not in enterprise.text()


def test_officer_changes_terms_then_closes_a_programme(people):
    officer = people("officer")
    officer.goto(f"/officer/programmes/{journey['programmes'][GIANTS_ONLY]}")
    officer.page.get_by_role("link", name="修改项目条款").click()
    officer.check()
    expect(officer.page.get_by_label("名称").first).to_have_value(GIANTS_ONLY)  # the form holds today's terms
    officer.page.get_by_label("预算（元）").fill("2000000.00")
    officer.page.get_by_role("button", name="保存条款").click()
    officer.check()
    assert "条款已修改" in flash(officer)
    assert "第 2 版" in officer.text() and "¥2,000,000.00" in officer.text()
    officer.page.get_by_role("button", name="停止受理新申领").click()
    officer.check()
    assert "项目已停止受理新申领" in flash(officer)
    assert "已截止" in officer.text()


def test_agency_delivers_with_materials_enterprise_confirms_agency_claims(people, tmp_path):
    agency = people("agency")
    agency.goto("/agency")
    agency.page.get_by_role("link", name=re.compile(journey["order"])).click()
    agency.check()
    deliverable = tmp_path / "专利导航分析报告.pdf"
    deliverable.write_bytes(DELIVERABLE)
    agency.page.get_by_label("合同编号").fill(f"HT-{RUN}")
    agency.page.get_by_label("发票号码").fill(f"3300{RUN}")
    agency.page.get_by_label("付款凭证编号").fill(f"BANK-{RUN}")
    damaged = tmp_path / "中断的报告.pdf"
    damaged.write_bytes(document_samples.truncated_pdf())
    agency.page.get_by_label("交付成果（PDF、JPEG 或 PNG）").set_input_files(str(damaged))
    agency.page.get_by_role("button", name="提交交付").click()
    agency.check()
    assert "PDF 文件不完整" in agency.text()  # the documents service's reason, in the page's language
    agency.page.get_by_label("交付成果（PDF、JPEG 或 PNG）").set_input_files(str(deliverable))
    agency.page.get_by_role("button", name="提交交付").click()
    agency.check()
    assert "交付已记录" in flash(agency)

    enterprise = people("enterprise")
    enterprise.goto(f"/enterprise/orders/{journey['order']}")
    text = enterprise.text()
    assert "已交付" in text and f"HT-{RUN}" in text
    assert hashlib.sha256(DELIVERABLE).hexdigest() in text  # the very file's hash, not one typed in
    enterprise.page.get_by_role("button", name="确认交付").click()
    enterprise.check()
    assert "已确认交付" in flash(enterprise)

    agency.goto(f"/agency/orders/{journey['order']}")
    agency.page.get_by_role("button", name="提交兑付申请").click()
    agency.check()
    assert "兑付申请已提交" in flash(agency)
    agency.page.get_by_role("link", name="兑付申请").first.click()
    expect(agency.page.get_by_role("row", name=re.compile(journey["order"].replace("o_", "c_")))).to_contain_text("待审核")
    agency.goto("/agency/rating")
    assert "等级依据" in agency.text()


def test_officer_reviews_the_claim_beside_its_materials_approves_and_pays(people):
    officer = people("officer")
    claim = journey["order"].replace("o_", "c_", 1)
    officer.goto("/officer/claims")
    officer.page.get_by_role("link", name=claim).click()
    officer.check()
    text = officer.text()
    assert "¥6,000.00" in text and hashlib.sha256(DELIVERABLE).hexdigest() in text and f"HT-{RUN}" in text
    officer.page.get_by_role("button", name="批准兑付").click()
    officer.check()
    assert "兑付已批准" in flash(officer)
    officer.screenshot("officer-claim")
    officer.page.get_by_label("付款凭证号").fill(f"GK-{RUN}")
    officer.page.get_by_role("button", name="登记付款").click()
    officer.check()
    assert "付款已登记" in flash(officer)
    # the programme's page shows its buckets as last recounted, and when; the exact count is one click
    officer.goto(f"/officer/programmes/{journey['programmes'][PROGRAMME]}")
    assert "核算的数字，每隔数秒重新核算" in officer.text()
    officer.page.get_by_role("link", name="立即逐张核算").click()
    officer.check()
    assert "以上为刚刚逐张核算的数字" in officer.text()
    assert officer.page.locator("dt:has-text('已支付') + dd").inner_text() == "¥6,000.00"
    # the run's programme takes no more applications, so the next run's lists stay short
    officer.page.get_by_role("button", name="停止受理新申领").click()
    assert "项目已停止受理新申领" in flash(officer)


def test_under_enterprise_pays_the_enterprise_claims_and_an_officer_rejects_with_a_reason(people, base_url):
    # Programme, voucher, order and delivery through the API (their pages are driven above); the claim by
    # the enterprise itself and the rejection are what this test clicks.
    from scripts.keycloak import Keycloak, Tokens
    tokens = Tokens(Keycloak())
    officer_token, enterprise_token = tokens("officer"), tokens("enterprise", ENTERPRISE)
    programme = api_json(base_url, "/api/v1/programmes", officer_token, "POST", {
        "name": f"门户测试企业兑付 {RUN}", "region": "331021", "fund_source": "门户测试专项资金",
        "budget_fen": 10_000_000, "opens_on": "2026-01-01", "closes_on": "2027-12-31", "validity_days": 365,
        "redemption_model": "enterprise_pays",
        "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 2_000_000}],
        "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                       "item_cap_fen": 800_000, "agency_kinds": ["patent"]}]})
    api_json(base_url, f"/api/v1/programmes/{programme['programme_id']}/open", officer_token, "POST")
    voucher = api_json(base_url, "/api/v1/vouchers", enterprise_token, "POST", {"programme_id": programme["programme_id"]})
    deliver_by = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400))
    order = api_json(base_url, "/api/v1/orders", enterprise_token, "POST", {
        "voucher_id": voucher["voucher_id"], "agency_id": "91331021MA2H1PT0XL", "service_code": "PAT-01",
        "price_fen": 1_000_000, "deliver_by": deliver_by})
    api_json(base_url, f"/api/v1/orders/{order['order_id']}/deliver", tokens("agency", "91331021MA2H1PT0XL"), "POST", {
        "contract_ref": f"HT-E-{RUN}", "invoice_no": f"3301{RUN}", "payment_proof_ref": f"BANK-E-{RUN}",
        "official_no": None, "deliverable_sha256": hashlib.sha256(SECOND_DELIVERABLE).hexdigest()})

    enterprise = people("enterprise")
    enterprise.goto(f"/enterprise/orders/{order['order_id']}")
    enterprise.page.get_by_role("button", name="确认交付").click()
    enterprise.check()
    assert "按本项目规定，由贵企业申请兑付资助 ¥5,000.00" in enterprise.text()
    enterprise.page.get_by_role("button", name="提交兑付申请").click()
    enterprise.check()
    assert "兑付申请已提交" in flash(enterprise)

    officer = people("officer")
    claim = order["order_id"].replace("o_", "c_", 1)
    officer.goto("/officer/claims")
    officer.page.get_by_role("link", name=claim).click()
    officer.check()
    officer.page.get_by_label("驳回理由").fill("发票金额与合同不符")
    officer.page.get_by_role("button", name="驳回兑付").click()
    officer.check()
    assert "兑付已驳回" in flash(officer)

    enterprise.goto(f"/enterprise/orders/{order['order_id']}")
    assert "已驳回: 发票金额与合同不符" in enterprise.text()   # the payee reads the reason
    enterprise.goto(f"/enterprise/vouchers/{voucher['voucher_id']}")
    assert enterprise.page.locator("dt:has-text('可用余额') + dd").inner_text() == "¥20,000.00"   # the hold came back


def test_the_payment_appears_in_the_public_notice_with_its_ledger_entry(visitor):
    def listed():
        visitor.goto(f"/publicity/{journey['programmes'][PROGRAMME]}")
        expect(visitor.page.get_by_role("row", name=re.compile("福州闽光精密制造有限公司"))).to_contain_text(
            "¥6,000.00", timeout=1000)
    until(listed, seconds=60)  # the ledger records the payment event, and the notice is cached 30 s
    visitor.page.get_by_role("row", name=re.compile("福州闽光精密制造有限公司")).get_by_role("link").click()
    visitor.check()
    assert "claim.paid" in visitor.text()


def test_enterprise_disputes_a_delivery_after_reading_its_materials(people, tmp_path):
    enterprise = people("enterprise")
    enterprise.goto(f"/enterprise/vouchers/{journey['voucher']}")
    enterprise.page.get_by_role("link", name="使用本券购买服务").click()
    enterprise.page.get_by_label(re.compile("专利导航分析")).check()
    enterprise.page.get_by_role("button", name="继续").click()
    enterprise.page.get_by_role("link", name="选择玉环明诚专利代理事务所").click()
    enterprise.page.get_by_label("与机构约定的价格（元）").fill("2000")
    enterprise.page.get_by_role("button", name="下单").click()
    assert "服务券支付 ¥1,000.00" in flash(enterprise)
    order = enterprise.page.url.rsplit("/", 1)[1]

    agency = people("agency")
    agency.goto(f"/agency/orders/{order}")
    deliverable = tmp_path / "检索报告.pdf"
    deliverable.write_bytes(SECOND_DELIVERABLE)
    agency.page.get_by_label("合同编号").fill(f"HT2-{RUN}")
    agency.page.get_by_label("发票号码").fill(f"3301{RUN}")
    agency.page.get_by_label("付款凭证编号").fill(f"BANK2-{RUN}")
    agency.page.get_by_label("交付成果（PDF、JPEG 或 PNG）").set_input_files(str(deliverable))
    agency.page.get_by_role("button", name="提交交付").click()
    assert "交付已记录" in flash(agency)

    enterprise.goto(f"/enterprise/orders/{order}")
    assert f"HT2-{RUN}" in enterprise.text()
    enterprise.page.get_by_role("button", name="对交付提出异议").click()
    enterprise.check()
    expect(enterprise.page.get_by_role("alert")).to_contain_text("请说明问题")  # a reason is required
    enterprise.page.get_by_label("交付存在什么问题").fill("检索报告缺少约定的同族专利分析")
    enterprise.page.get_by_role("button", name="对交付提出异议").click()
    enterprise.check()
    assert "您的异议已记录" in flash(enterprise)
    assert "有异议" in enterprise.text()


def test_auditor_sees_the_ledger_verified_fund_use_drills_down_and_exports(people):
    auditor = people("auditor")
    auditor.goto("/auditor")
    assert "核验通过" in auditor.text()
    auditor.page.get_by_role("link", name="资金使用").click()
    auditor.check()
    assert auditor.heading() == "按月份统计资金使用"
    expect(auditor.page.get_by_role("img", name="下表数据的柱状图").locator("svg")).to_be_visible()
    auditor.page.get_by_role("link", name="机构", exact=True).click()
    auditor.check()
    auditor.screenshot("auditor-fund-use")
    row = auditor.page.get_by_role("row", name=re.compile("玉环明诚专利代理事务所"))
    row.get_by_role("link").nth(4).click()  # the agency's "paid" figure
    auditor.check()
    assert "对应的账本条目" in auditor.heading()
    assert "claim.paid" in auditor.text()

    auditor.page.get_by_role("link", name="导出").click()
    auditor.page.get_by_role("button", name="开始导出").click()
    expect(auditor.page.get_by_role("link", name="下载导出文件")).to_be_visible(timeout=60_000)
    auditor.check()
    assert re.search(r"已完成：共 \d+ 行", auditor.text())


def test_ops_signs_in_and_out_and_the_session_is_gone(people):
    ops = people("ops")
    ops.goto("/ops")
    assert ops.heading() == "运维"
    ops.page.get_by_role("button", name="退出登录").click()
    ops.page.wait_for_url(ops.base_url + "/signed-out")
    ops.check()
    assert ops.heading() == "您已退出登录"
    ops.goto("/ops")
    assert ops.heading() == "登录"  # the portal session and the realm session both ended
    ops.page.get_by_role("link", name="继续登录").click()
    expect(ops.page.locator("#username")).to_be_visible()  # Keycloak asks for the password again


def test_the_session_cookie_is_out_of_scripts_reach_and_pages_forbid_inline_code(people):
    enterprise = people("enterprise")
    (cookie,) = [c for c in enterprise.context.cookies() if c["name"] == "ipv_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert enterprise.page.evaluate("document.cookie").find("ipv_session") == -1
    response = enterprise.page.goto(enterprise.base_url + "/enterprise")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe-inline" not in policy
