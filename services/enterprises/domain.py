"""Rules about enterprises and their quality-tier qualifications. Data in, decisions out; no I/O.

Tiers follow 《优质中小企业梯度培育管理暂行办法》(工信部企业〔2022〕63号, from 2022-08-01) and its
2026 revision (from 2026-04-01), which renames the bottom tier 科技和创新型中小企业. Each tier's
rules carry the dates they apply to, so a certificate is judged by the rules of its issue date.
"""
from dataclasses import dataclass
from datetime import date, timedelta

from ipvkit.errors import IllegalTransition, RuleRefused

# GB/T 2260 province-level prefixes (first two digits of a six-digit division code).
PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
    "71", "81", "82",
}


@dataclass(frozen=True)
class TierRule:
    name: str
    levels: tuple            # administrative levels that may certify it
    issued_from: date        # certificates starting before this date are not of this tier
    issued_until: date       # ... nor those starting on or after this one
    max_years: int = 3       # a certificate is valid for at most this many years


NEVER = date(9999, 12, 31)
TIERS = {
    "innovative_sme": TierRule("创新型中小企业", ("provincial", "municipal"), date(2022, 8, 1), date(2026, 4, 1)),
    "tech_innovative_sme": TierRule("科技和创新型中小企业", ("provincial", "municipal"), date(2026, 4, 1), NEVER),
    "srdi_sme": TierRule("专精特新中小企业", ("provincial", "municipal"), date(2022, 8, 1), NEVER),
    "little_giant": TierRule('专精特新"小巨人"企业', ("national",), date(2019, 1, 1), NEVER),
}


def region_problem(code):
    """None if `code` can be a GB/T 2260 division code, else why not."""
    if code[:2] not in PROVINCES:
        return f"{code[:2]} is not a province code"
    return None


def enterprise_code_problem(code):
    """Only enterprises registered with market regulation (登记管理部门 9, 机构类别 1) can hold the
    quality-SME tiers; 个体工商户 (92) and co-operatives (93) cannot."""
    if not code.startswith("91"):
        return "not an enterprise code: must start with 91 (market regulation, enterprise)"
    return None


def add_years(day, years):
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check_grant(tier, level, valid_from, valid_to):
    """Raises RuleRefused naming the rule a new qualification breaks."""
    rule = TIERS[tier]
    if valid_to < valid_from:
        raise RuleRefused("validity_order", "valid_to is before valid_from")
    if level not in rule.levels:
        raise RuleRefused("tier_level", f"{rule.name} is certified at {' or '.join(rule.levels)} level, not {level}")
    if not rule.issued_from <= valid_from < rule.issued_until:
        raise RuleRefused("tier_period", f"{rule.name} certificates can start from {rule.issued_from}"
                          + ("" if rule.issued_until == NEVER else f" until before {rule.issued_until}")
                          + f"; this one starts {valid_from}")
    last_day = add_years(valid_from, rule.max_years) - timedelta(days=1)
    if valid_to > last_day:
        raise RuleRefused("validity_length", f"{rule.name} is valid for at most {rule.max_years} years: "
                          f"valid_to must be on or before {last_day}")


def last_valid_day(q):
    """The last day a qualification counts: its validity end, or the day before its revocation."""
    end = date.fromisoformat(q["valid_to"])
    if q.get("revoked_on"):
        end = min(end, date.fromisoformat(q["revoked_on"]) - timedelta(days=1))
    return end


def is_valid_on(q, day):
    """Valid from `valid_from` through `valid_to`, both days included, unless revoked before."""
    return date.fromisoformat(q["valid_from"]) <= day <= last_valid_day(q)


def tiers_on(qualifications, day):
    return sorted({q["tier"] for q in qualifications if is_valid_on(q, day)})


def check_revoke(q, revoked_on):
    if q["status"] != "active":
        raise IllegalTransition("qualification", q["status"], "revoke")
    if revoked_on < date.fromisoformat(q["valid_from"]):
        raise RuleRefused("revocation_date", f"revoked_on {revoked_on} is before valid_from {q['valid_from']}")


def is_due_for_expiry(q, today):
    return q["status"] == "active" and date.fromisoformat(q["valid_to"]) < today


def standing_notification(event):
    """The inbox message for an agency's fall below the voucher line or its blacklisting, or None
    when the change needs no alert (the agency is still eligible)."""
    data = event["data"]
    name = data["agency_name"]
    if event["type"] == "provider.blacklisted":
        title = f"代理机构「{name}」已被列入严重失信/经营异常名单"
        body = (f"{name} 自 {data['listed_from']} 起被列入名单（{data['reason']}，来源：{data['source']}）。"
                "该机构不能再承接新的服务券订单；您已下的订单可继续履行，结算时将按规则审核。"
                "如需更换服务机构，请在取消订单前与其协商。")
        return {"kind": "agency_blacklisted", "title": title, "body": body, "old_standing": "eligible",
                "new_standing": "blacklisted"}
    if event["type"] == "provider.status_changed":
        return _status_notification(data)
    if data["was_eligible"] and not data["eligible"]:
        title = f"代理机构「{name}」信用等级降至 {data['new_level']} 级，低于服务券资格线 {data['eligibility_line']} 级"
        body = (f"{name} 的信用等级由 {data['old_level'] or '无'} 级变为 {data['new_level']} 级（得分 {data['score']}）。"
                "该机构不能再承接新的服务券订单；降级前已下的订单可继续履行并结算。")
        return {"kind": "agency_below_line", "title": title, "body": body,
                "old_standing": f"level {data['old_level'] or 'unrated'}", "new_standing": f"level {data['new_level']}"}
    return None


def _status_notification(data):
    """A suspension or cancellation alerts; a reinstatement does not (nothing to act on)."""
    name, old, new = data["agency_name"], data["old_status"], data["new_status"]
    if new not in ("suspended", "cancelled") or old == new:
        return None
    if new == "suspended":
        title = f"代理机构「{name}」已被暂停服务券业务"
        body = (f"{name} 已被暂停（{data['reason']}）。暂停期间该机构不能承接新的服务券订单；您已下的订单仍然有效，"
                "交付与结算照常审核。如需改选其他机构，可在交付前取消订单，补贴额度退回您的服务券。")
    else:
        title = f"代理机构「{name}」已注销"
        body = (f"{name} 已注销（{data['reason']}），不能再承接或交付服务券订单。"
                "请取消尚未交付的订单，补贴额度退回您的服务券，再改选其他机构。")
    return {"kind": f"agency_{new}", "title": title, "body": body, "old_standing": f"status {old}",
            "new_standing": f"status {new}"}
