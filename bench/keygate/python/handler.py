import json


# The Python handler a Serverless user would write for GET /candidates.
def list(event, context):
    return {"statusCode": 200, "body": json.dumps({"candidates": []})}
