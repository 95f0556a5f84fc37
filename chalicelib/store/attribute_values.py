"""DynamoDB's typed attribute values ({"S": ...}, {"N": ...}) for the shapes our items hold.

Written here rather than taken from boto3.dynamodb.types so the Lambda code needs botocore
only: Lambda's runtime and an emulator's environment both have botocore, and boto3 need
not be imported at all (boto3's TypeSerializer also covers sets and binary, which our
items never hold).
"""
from decimal import Decimal
from typing import Any, Dict


def serialize(value: Any) -> Dict[str, Any]:
    """The attribute value of str, int, Decimal, bool, None, list and dict values."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):  # before int: a bool is an int
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (list, tuple)):
        return {"L": [serialize(item) for item in value]}
    if isinstance(value, dict):
        return {"M": {str(key): serialize(item) for key, item in value.items()}}
    raise TypeError(f"no DynamoDB attribute value for {type(value).__name__}")


def deserialize(attribute: Dict[str, Any]) -> Any:
    """The Python value of an attribute value (numbers as Decimal, as boto3 gives them)."""
    [(kind, value)] = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        return Decimal(value)
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "L":
        return [deserialize(item) for item in value]
    if kind == "M":
        return {key: deserialize(item) for key, item in value.items()}
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {Decimal(number) for number in value}
    raise TypeError(f"an attribute of type {kind} is not one our items hold")
