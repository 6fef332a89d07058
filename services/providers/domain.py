"""Rules about agencies, their credit ratings and their eligibility. Data in, decisions out; no I/O.

Ratings follow 《专利代理信用评价管理办法（试行）》(国知发运字〔2023〕10号, from 2023-05-01): every agency
starts at 100 points, negative information deducts points by indicator, bonus points (附加加分) for
honours, awards, social contribution or reporting violations lift a score above 100, and the score
gives the level: A 90-100, B 80-<90, C 60-<80, D <60, A+ only above the A+ threshold, which only a
bonus can reach. The published text gives five deductions; every other indicator and every bonus
below is an assumption marked `confirmed=False`, kept in the dated rule table so a corrected table
is a new entry, not an edit of the old one.
"""
from dataclasses import dataclass, field
from datetime import date

from ipvkit.contracts.provider import CREDIT_LEVELS
from ipvkit.errors import IllegalTransition, RuleRefused


@dataclass(frozen=True)
class Indicator:
    name: str
    points: int            # per occurrence; for a graded indicator, the most one occurrence can cost
    cap: int               # the most this indicator can add or deduct in one evaluation
    graded: bool = False   # the officer sets the points (0..points) per the official grading
    confirmed: bool = True  # False: not in the text retrieved; an assumption to be checked


@dataclass(frozen=True)
class RuleSet:
    version: str
    effective_from: date
    base: int
    a_plus_above: int      # a score strictly above this is A+ (the trademark draft says "above 100")
    bonus_cap: int
    deductions: dict = field(default_factory=dict)
    bonuses: dict = field(default_factory=dict)


# Bands of 国知发运字〔2023〕10号: (lowest score, level), highest first. A+ is decided by a_plus_above.
BANDS = ((90, "A"), (80, "B"), (60, "C"), (0, "D"))

RULESETS = (
    RuleSet(
        version="国知发运字〔2023〕10号", effective_from=date(2023, 5, 1), base=100, a_plus_above=100, bonus_cap=10,
        deductions={
            "abnormal_filings": Indicator("非正常专利申请（境内外）", points=40, cap=40, graded=True),
            "ordered_to_stop_new_business": Indicator("被责令停止承接新的专利代理业务", points=60, cap=60),
            "licence_revoked": Indicator("被吊销专利代理机构执业许可证", points=100, cap=100),
            "manager_convicted": Indicator("高级管理人员受到刑事处罚", points=100, cap=100),
            "abnormal_case_volume": Indicator("代理师人均代理量明显超出正常水平且无正当理由", points=15, cap=15),
            "administrative_penalty": Indicator("受到行政处罚（警告、罚款）", points=10, cap=30, confirmed=False),
            "industry_discipline": Indicator("受到行业自律惩戒", points=5, cap=20, confirmed=False),
            "abnormal_operation": Indicator("被列入经营异常名录", points=10, cap=10, confirmed=False),
            "irregular_practice": Indicator("执业不规范（如未按规定备案、签署文件）", points=2, cap=20, confirmed=False),
        },
        bonuses={
            "honour": Indicator("获得表彰奖励", points=3, cap=6, confirmed=False),
            "social_contribution": Indicator("社会贡献（公益服务、援助等）", points=2, cap=4, confirmed=False),
            "reported_violation": Indicator("举报违法违规行为经查实", points=1, cap=3, confirmed=False),
        },
    ),
)

ALL_DEDUCTIONS = sorted({code for rules in RULESETS for code in rules.deductions})
ALL_BONUSES = sorted({code for rules in RULESETS for code in rules.bonuses})
UNRATED = "unrated"
LEVEL_ORDER = {level: rank for rank, level in enumerate(CREDIT_LEVELS)}  # A+ 0 ... D 4


def rules_on(day):
    """The rule set in force on `day` (the last day of the evaluated period)."""
    in_force = [r for r in RULESETS if r.effective_from <= day]
    if not in_force:
        raise RuleRefused("rating_rules_period", f"no rating rules were in force on {day}; the first take "
                          f"effect on {RULESETS[0].effective_from}")
    return max(in_force, key=lambda r: r.effective_from)


def level_for(score, rules):
    if score > rules.a_plus_above:
        return "A+"
    for lowest, level in BANDS:
        if score >= lowest:
            return level
    return "D"


def _items(inputs, table, kind):
    items = []
    for entry in inputs:
        code = entry["indicator"]
        indicator = table.get(code)
        if indicator is None:
            raise RuleRefused("unknown_indicator", f"{code} is not a {kind} indicator of these rules")
        count = entry.get("count", 1)
        if indicator.graded:
            if entry.get("points") is None:
                raise RuleRefused("graded_points", f"{code} is graded: give the points (0..{indicator.points})")
            if entry["points"] > indicator.points * count:
                raise RuleRefused("indicator_cap", f"{code} can count at most {indicator.points} points per "
                                  f"occurrence; {count} occurrence(s) give at most {indicator.points * count}")
            raw = entry["points"]
        else:
            if entry.get("points") is not None:
                raise RuleRefused("fixed_points", f"{code} has fixed points ({indicator.points} per occurrence); "
                                  "give only the count")
            raw = indicator.points * count
        items.append({"indicator": code, "name": indicator.name, "count": count, "points": min(raw, indicator.cap),
                      "capped": raw > indicator.cap, "confirmed": indicator.confirmed, "note": entry.get("note")})
    return items


def evaluate(period_to, deductions, bonuses):
    """Score and level of one evaluation, with every line that produced them."""
    rules = rules_on(period_to)
    deducted = _items(deductions, rules.deductions, "deduction")
    added = _items(bonuses, rules.bonuses, "bonus")
    bonus = min(sum(i["points"] for i in added), rules.bonus_cap)
    score = max(0, rules.base - sum(i["points"] for i in deducted)) + bonus
    return {"rules_version": rules.version, "base": rules.base, "deductions": deducted, "bonuses": added,
            "bonus_total": bonus, "bonus_capped": sum(i["points"] for i in added) > rules.bonus_cap,
            "score": score, "level": level_for(score, rules), "bands": band_table(rules)}


def band_table(rules):
    return [f"A+ > {rules.a_plus_above} (bonus only)", "A 90-100", "B 80-<90", "C 60-<80", "D <60"]


def becomes_current(current, period_to):
    """A new evaluation replaces the current rating unless it covers an earlier period (a back-filled
    evaluation is kept in the history but does not override a later one)."""
    return current is None or period_to >= date.fromisoformat(current["period_to"])


# -- eligibility ---------------------------------------------------------------------------------
def meets_line(level, line, unrated_eligible):
    if level is None:
        return unrated_eligible
    return LEVEL_ORDER[level] <= LEVEL_ORDER[line]


def is_eligible(agency, line, unrated_eligible):
    """May take new voucher orders: active, not blacklisted, level at or above the line."""
    return (agency["status"] == "active" and not agency.get("blacklist")
            and meets_line(agency.get("level"), line, unrated_eligible))


def metric_status(agency):
    return "blacklisted" if agency.get("blacklist") else agency["status"]


# -- status ----------------------------------------------------------------------------------------
TRANSITIONS = {
    "suspend": ({"active"}, "suspended"),
    "reinstate": ({"suspended"}, "active"),
    "cancel": ({"active", "suspended"}, "cancelled"),
}


def next_status(current, action):
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        raise IllegalTransition("agency", current, action)
    return target


def check_blacklist(agency, listed_from, listed_to, today):
    if agency.get("blacklist"):
        raise IllegalTransition("agency", "blacklisted", "blacklist")
    if listed_from > today:
        raise RuleRefused("listing_in_future", f"listed_from {listed_from} is after today ({today}); record a "
                          "listing once it applies")
    if listed_to is not None and listed_to < today:
        raise RuleRefused("listing_over", f"listed_to {listed_to} has passed; a listing that is over changes nothing")


def check_lift(agency):
    if not agency.get("blacklist"):
        raise IllegalTransition("agency", "not blacklisted", "lift the blacklisting of")


def listing_over(blacklist, today):
    return blacklist is not None and blacklist.get("listed_to") is not None and date.fromisoformat(
        blacklist["listed_to"]) < today


# -- regions -----------------------------------------------------------------------------------------
def region_prefixes(region):
    """Province, city and district prefixes of a GB/T 2260 code, so a filter can match any of them."""
    return [region[:2], region[:4], region]


# -- service record and recommendations ----------------------------------------------------------------
RECORD_KEYS = ("orders", "open_orders", "delivered", "on_time", "claims_rejected", "disputes", "disputes_upheld")


CLOSING = {"order.cancelled": "cancelled", "claim.rejected": "claim_rejected", "claim.paid": "paid"}


def order_effect(event):
    """What one order or claim event does to the order's record: (closed reason or None, counter
    increments). An order is open until paid, cancelled, its claim rejected or a dispute upheld
    (the hold is released: nothing more will be delivered or paid)."""
    kind, data = event["type"], event["data"]
    closed, inc = CLOSING.get(kind), {}
    if kind == "order.delivered":
        inc = {"delivered": 1, "on_time": 1 if data["on_time"] else 0}
    elif kind == "order.disputed":
        inc = {"disputes": 1}
    elif kind == "order.dispute_resolved" and data["upheld"]:
        inc, closed = {"disputes_upheld": 1}, "dispute_upheld"
    elif kind == "claim.rejected":
        inc = {"claims_rejected": 1}
    return closed, inc


def service_record(orders):
    """Counts over the agency's orders as the vouchers service reported them."""
    record = dict.fromkeys(RECORD_KEYS, 0)
    for order in orders:
        record["orders"] += 1
        record["open_orders"] += 1 if order.get("open") else 0
        for key in RECORD_KEYS[2:]:
            record[key] += order.get(key, 0)
    record["on_time_rate"] = round(record["on_time"] / record["delivered"], 4) if record["delivered"] else None
    return record


def _rank_key(candidate):
    record = candidate["service_record"]
    rate = record["on_time_rate"]
    return (LEVEL_ORDER.get(candidate["level"], len(CREDIT_LEVELS)), -(candidate["score"] or 0),
            -(rate if rate is not None else 0), record["disputes_upheld"], record["claims_rejected"],
            -record["delivered"], candidate["agency_id"])


def _describe(candidate):
    record = candidate["service_record"]
    level = (f"credit level {candidate['level']} (score {candidate['score']})" if candidate["level"]
             else "not yet rated (every agency starts at 100 points)")
    if record["delivered"]:
        delivery = f"{record['on_time']} of {record['delivered']} deliveries on time"
    else:
        delivery = "no voucher deliveries recorded yet"
    return (f"{level}; {delivery}; {record['claims_rejected']} claim(s) rejected; "
            f"{record['disputes_upheld']} of {record['disputes']} dispute(s) upheld against it")


def _versus(candidate, above):
    """Why `candidate` is below `above`: the first ranking factor that separates them."""
    a, b = candidate, above
    if a["level"] != b["level"]:
        return f"lower credit level than #{b['rank']} ({a['level'] or UNRATED} below {b['level']})"
    if (a["score"] or 0) != (b["score"] or 0):
        return f"same level as #{b['rank']}, lower score ({a['score']} < {b['score']})"
    ra, rb = a["service_record"], b["service_record"]
    if (ra["on_time_rate"] or 0) != (rb["on_time_rate"] or 0):
        return f"same level and score as #{b['rank']}, lower on-time delivery rate"
    if ra["disputes_upheld"] != rb["disputes_upheld"]:
        return f"same level and score as #{b['rank']}, more disputes upheld against it"
    if ra["claims_rejected"] != rb["claims_rejected"]:
        return f"same level and score as #{b['rank']}, more claims rejected"
    return f"tied with #{b['rank']} on level, score and service record"


def rank(candidates):
    """Orders eligible agencies by level, score, then service record (on-time rate, disputes upheld,
    claims rejected, deliveries), and gives each the reason for its place."""
    ranked = sorted(candidates, key=_rank_key)
    for position, candidate in enumerate(ranked, 1):
        candidate["rank"] = position
        basis = "highest ranked" if position == 1 else _versus(candidate, ranked[position - 2])
        candidate["reason"] = f"#{position}: {basis}. {_describe(candidate)}"
    return ranked


MAX_ORDER_IDS = 1000  # per enterprise in a standing event (the contract's bound)


def open_orders_by_enterprise(orders):
    """`affected_enterprises` of a standing event: the agency's open orders grouped by enterprise."""
    grouped = {}
    for order in orders:
        grouped.setdefault(order["enterprise_id"], []).append(order["_id"])
    return [{"enterprise_id": e, "order_ids": sorted(ids)[:MAX_ORDER_IDS]} for e, ids in sorted(grouped.items())]
