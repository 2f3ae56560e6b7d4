"""The shape of the files admins edit, as pydantic models (`extra="forbid"`: a misspelt key is an
error, not a silently ignored setting). Meaning (which factor exists, which value is known) is
checked later by `ruleset.compile_rules`; this module only knows shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector.errors import Text

Scalar = StrictStr | StrictBool | StrictInt | Decimal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FactorSpec(_Strict):
    field: StrictStr
    values: list[Scalar] | None = None
    bands: dict[str, Decimal] | None = None
    empty: Scalar | None = None  # the value to use when the field is blank

    @model_validator(mode="after")
    def _values_or_bands(self) -> FactorSpec:
        if (self.values is None) == (self.bands is None):
            raise ValueError(Text("a factor has either 'values' (best first) or 'bands', not both "
                                  "and not neither"))
        if self.values is not None and not self.values:
            raise ValueError(Text("'values' is empty: list the values, best first"))
        if self.bands is not None and not self.bands:
            raise ValueError(Text("'bands' is empty: name the bands with their lower bounds"))
        return self


class ClosedSpec(_Strict):
    field: StrictStr
    won: list[Scalar] = Field(default_factory=list)
    lost: list[Scalar] = Field(default_factory=list)


class WorkflowSpec(_Strict):
    name: StrictStr
    when: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Any] = Field(default_factory=dict)
    actions: list[StrictStr] = Field(default_factory=list)
    description: StrictStr | None = None


class ProbabilitySpec(_Strict):
    min: Decimal = Decimal(10)
    max: Decimal = Decimal(90)
    step: Decimal = Decimal(10)
    weights: dict[str, Decimal]

    @model_validator(mode="after")
    def _sane(self) -> ProbabilitySpec:
        if not (Decimal(0) <= self.min <= self.max <= Decimal(100)):
            raise ValueError(Text("need 0 <= min <= max <= 100"))
        if self.step <= 0:
            raise ValueError(Text("'step' must be greater than 0"))
        if not self.weights:
            raise ValueError(Text("'weights' is empty: give each factor a weight"))
        return self


class EmailSpec(_Strict):
    to: list[StrictStr]
    cc: list[StrictStr] = Field(default_factory=list)
    subject: StrictStr
    template: StrictStr | None = None  # a file under rules/
    body: StrictStr | None = None      # or the text inline

    @model_validator(mode="after")
    def _one_body(self) -> EmailSpec:
        if (self.template is None) == (self.body is None):
            raise ValueError(Text("an email has either 'template' (a file) or 'body' (inline "
                                  "text)"))
        return self


class HttpSpec(_Strict):
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    url: StrictStr
    json_body: Any = Field(default=None, alias="json")
    headers: dict[str, StrictStr] = Field(default_factory=dict)


class AudienceSpec(_Strict):
    """The opportunity's contact put in an email-marketing list (Mailchimp audience, Brevo
    list) with merge fields (Brevo: attributes) and, on Mailchimp, tags added or removed."""

    provider: Literal["mailchimp", "brevo"]
    list_id: StrictStr | StrictInt = Field(alias="list")  # or "${NAME}" from the environment
    email: StrictStr                   # a template: the contact's address
    merge_fields: dict[str, Any] = Field(default_factory=dict)
    tags: list[StrictStr] = Field(default_factory=list)
    remove_tags: list[StrictStr] = Field(default_factory=list)
    status: Literal["subscribed", "pending", "transactional"] = "subscribed"  # a new member's

    @field_validator("list_id")
    @classmethod
    def _list_given(cls, value: str | int) -> str | int:
        if isinstance(value, str) and not value.strip():
            raise ValueError(Text("'list' is empty: give the list id, or \"${NAME}\" to read it "
                                  "from the environment"))
        return value

    @field_validator("tags", "remove_tags")
    @classmethod
    def _provider_has_tags(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("provider") == "brevo":
            raise ValueError(Text("Brevo contacts have no tags: put them in a list, or set an "
                                  "attribute in merge_fields"))
        return value


class ApprovalSpec(EmailSpec):
    """An email to an approver with two one-click links (approve, reject). The decision is
    written to `field` (a writeback field: Pending, then Approved or Rejected) and fires the
    actions named for it."""

    field: StrictStr
    expires_in_days: StrictInt = Field(7, ge=1, le=90)
    on_approve: list[StrictStr] = Field(default_factory=list)
    on_reject: list[StrictStr] = Field(default_factory=list)


class ActionSpec(_Strict):
    email: EmailSpec | None = None
    http: HttpSpec | None = None
    erp: Literal["sales_order"] | None = None
    approval: ApprovalSpec | None = None
    audience: AudienceSpec | None = None
    description: StrictStr | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ActionSpec:
        kinds = [k for k in ("email", "http", "erp", "approval", "audience")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(Text("an action is exactly one of 'email', 'http', 'erp', 'approval' "
                                  "or 'audience'"))
        return self


class StepSpec(_Strict):
    after_days: StrictInt = Field(ge=0)
    do: list[StrictStr] = Field(min_length=1)


class TriggerSpec(_Strict):
    """`when` turns true -> `do` fires once. With `steps`, the trigger escalates: each step
    fires once per episode, `after_days` after the date `since` gives (a formula: the stage
    change date, the close date...). An episode ends when `when` turns false."""

    name: StrictStr | None = None
    when: StrictStr
    do: list[StrictStr] = Field(default_factory=list)
    since: StrictStr | None = None
    steps: list[StepSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _do_or_steps(self) -> TriggerSpec:
        if bool(self.do) == bool(self.steps):
            raise ValueError(Text("a trigger has either 'do' (actions) or 'steps' (escalation), "
                                  "not both and not neither"))
        if self.steps and not self.since:
            raise ValueError(Text("'steps' count days from 'since': give the date they start from, "
                                  "e.g. since: stage_changed"))
        if self.since and not self.steps:
            raise ValueError(Text("'since' is only for 'steps'"))
        return self


class RulesSpec(_Strict):
    """All of `rules/*.yaml` merged (a top-level key lives in one file only)."""

    factors: dict[str, FactorSpec] = Field(default_factory=dict)
    closed: ClosedSpec | None = None
    workflows: list[WorkflowSpec] | None = None
    probability: ProbabilitySpec | None = None
    computed: dict[str, StrictStr | StrictInt | Decimal] = Field(default_factory=dict)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    triggers: list[TriggerSpec] = Field(default_factory=list)


FieldKind = Literal["text", "number", "money", "percent", "integer", "date", "datetime", "boolean"]


class MappingSpec(_Strict):
    crm: Literal["salesforce", "hubspot"]
    object: StrictStr
    id: StrictStr
    modified: StrictStr
    fields: dict[str, StrictStr]
    writeback: list[StrictStr] = Field(default_factory=list)
    # Types the CRM cannot tell us (an export has only text); Salesforce's describe wins.
    types: dict[str, FieldKind] = Field(default_factory=dict)
    # How exports write numbers and dates (a CLDR locale id: es_CO); none: ISO and plain only.
    locale: StrictStr | None = None
    # Fields an export may lack (read as blank); any other field the rules read must be there.
    optional: list[StrictStr] = Field(default_factory=list)
    # The fields are an export's column labels (a Salesforce report: "Close Date"), not API
    # names: such a mapping reads exports only, and is refused for the CRM itself.
    labels: bool = False
