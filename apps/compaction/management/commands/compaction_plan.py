import json
import sys

from django.core.management.base import BaseCommand, CommandError

from apps.compaction.planner import plan, validate


class Command(BaseCommand):
    help = 'Plan replica compaction offline: reads {"nodes": [...], "replicas": [...]} and prints the plan as JSON.'

    def add_arguments(self, parser):
        parser.add_argument("--input", required=True, help="state JSON file, or - for standard input")

    def handle(self, *args, **options):
        try:
            text = sys.stdin.read() if options["input"] == "-" else open(options["input"]).read()  # noqa: SIM115
            state = json.loads(text)
            result = plan(state)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot plan from {options['input']}: {exc}") from exc
        problems = validate(state, result)
        if problems:  # never print an invalid plan as if it were one
            raise CommandError("planner produced an invalid plan: " + "; ".join(problems[:5]))
        self.stdout.write(json.dumps(result, indent=2))
