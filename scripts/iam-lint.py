"""Lints every IAM policy of a generated template with parliament.

Usage: iam-lint.py TEMPLATE.json

Each policy (a role's inline policies, each managed policy) is resolved as
CloudFormation would resolve it for an account (`Fn::Sub` with the pseudo
parameters and the stack's references filled in, `Fn::GetAtt` as the ARN
it stands for), then given to parliament. Any finding fails the check and
is printed with the policy it came from.
"""

import json
import re
import sys

from parliament import analyze_policy_string

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
}

# What a reference inside a policy stands for, by the kind of resource.
GETATT = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:us-east-1:123456789012:table/{id}",
}

# What `Ref` stands for, for the kinds whose `Ref` is an ARN.
REF = {
    "AWS::ElasticLoadBalancingV2::TargetGroup": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{id}/0123456789abcdef",
}


def resolve(value, resources):
    if isinstance(value, dict):
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            if isinstance(text, list):
                text, names = text
                for name, replacement in names.items():
                    text = text.replace("${" + name + "}", str(resolve(replacement, resources)))
            return re.sub(
                r"\$\{([^}!]+)\}",
                lambda m: PSEUDO.get(m.group(1), m.group(1)),
                text,
            )
        if "Fn::GetAtt" in value:
            logical, _ = value["Fn::GetAtt"]
            kind = resources.get(logical, {}).get("Type", "")
            return GETATT.get(kind, "arn:aws:unknown:::{id}").format(id=logical)
        if "Ref" in value:
            kind = resources.get(value["Ref"], {}).get("Type", "")
            return REF.get(kind, "{id}").format(id=value["Ref"])
        return {k: resolve(v, resources) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, resources) for v in value]
    return value


def policies(template):
    resources = template["Resources"]
    for logical, resource in sorted(resources.items()):
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                name = f"{logical}/{inline['PolicyName']}"
                yield name, resolve(inline["PolicyDocument"], resources)
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            yield logical, resolve(props["PolicyDocument"], resources)


def main(path):
    with open(path) as f:
        template = json.load(f)
    count = 0
    problems = []
    for name, document in policies(template):
        count += 1
        policy = analyze_policy_string(json.dumps(document))
        for finding in policy.findings:
            problems.append(f"{name}: {finding.issue} {finding.detail} {finding.location}")
    if count == 0:
        problems.append("no IAM policy found")
    for problem in problems:
        print(problem)
    print(f"{count} policies, {len(problems)} findings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
