"""The prices bench/cost.py multiplies by: AWS list prices in us-east-1 and QStash's
pay-as-you-go price, as of AS_OF.

They were written down from the providers' published pricing as known on that date, with
no way to look them up then: check every line against the pages below before relying on
a total, change what moved, and set AS_OF to the day you checked. Free tiers are listed
apart (FREE_TIERS) and never subtracted: the cost table is at list price.

    https://aws.amazon.com/lambda/pricing/
    https://aws.amazon.com/dynamodb/pricing/on-demand/
    https://aws.amazon.com/eventbridge/pricing/
    https://aws.amazon.com/api-gateway/pricing/
    https://aws.amazon.com/cloudwatch/pricing/
    https://upstash.com/pricing/qstash
"""
from dataclasses import dataclass

AS_OF = "2026-11-27"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    """`dollars` for every `per` units of `unit`."""

    dollars: float
    per: float
    unit: str

    @property
    def each(self) -> float:
        """Dollars for one unit."""
        return self.dollars / self.per

    def __str__(self) -> str:
        """$3.50 per 1M requests, $0.0000166667 per GB-s."""
        per = {1: "", 1e5: "100K ", 1e6: "1M "}.get(self.per, f"{self.per:g} ")
        whole, _, cents = f"{self.dollars:.10f}".rstrip("0").partition(".")
        return f"${whole}.{cents.ljust(2, '0')} per {per}{self.unit}"


PRICES = {
    # Lambda, x86, the first tier (6 billion GB-s a month). Since 1 Aug 2025 a cold start's
    # INIT phase is billed as duration too, for zip functions on managed runtimes.
    "lambda_gb_second": Price(0.0000166667, 1, "GB-s"),
    "lambda_request": Price(0.20, 1e6, "requests"),
    # DynamoDB on-demand, Standard table class. AWS halved the request prices on
    # 1 Nov 2024 (they were $1.25 and $0.25).
    "dynamodb_write_unit": Price(0.625, 1e6, "write request units"),
    "dynamodb_read_unit": Price(0.125, 1e6, "read request units"),
    "dynamodb_storage": Price(0.25, 1, "GB-month"),
    # Point-in-time recovery (the stack turns it on), on the table's size.
    "dynamodb_pitr": Price(0.20, 1, "GB-month"),
    # EventBridge Scheduler: per invocation; creating, updating and deleting schedules is
    # not charged.
    "scheduler_invocation": Price(1.00, 1e6, "invocations"),
    # API Gateway REST API (what chalice deploys), the first 333 million a month.
    "api_gateway_rest": Price(3.50, 1e6, "requests"),
    # CloudWatch Logs, standard log class, data ingested.
    "logs_ingested": Price(0.50, 1, "GB"),
    # EventBridge event bus: a custom event put on a bus (as a schedule targeting a bus
    # does), and an API destination's HTTP call.
    "eventbridge_custom_event": Price(1.00, 1e6, "events"),
    "eventbridge_api_destination": Price(0.20, 1e6, "invocations"),
    # QStash pay-as-you-go: $1 per 100K messages; a delayed one-time message is one.
    # Assumption: its page has said both that retries are free and that each delivery
    # attempt is a message; the anchor counts one message per task.
    "qstash_message": Price(1.00, 1e5, "messages"),
}

FREE_TIERS = {
    "EventBridge Scheduler": "14 million invocations a month",
    "Lambda": "1 million requests and 400,000 GB-s a month",
    "DynamoDB": "25 GB of storage",
    "CloudWatch Logs": "5 GB ingested a month",
    "API Gateway": "1 million REST requests a month, the first 12 months of a new account",
    "QStash": "1,000 messages a day",
}
