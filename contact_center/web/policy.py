"""Who may see and change what in the console: the role rules, in one place.

- admin: everything, including settings;
- supervisor: every conversation of their teams (and unassigned ones without a team),
  reports and campaigns;
- agent: their own conversations, their teams' unassigned queue, their own customers,
  and the customers of the work given to them (a conversation they may see, an open deal
  they own, an open care task of theirs).

Pages and API calls check here; queries that list things filter with
``visible_conversations`` so nobody sees a row they could not open.
"""

from __future__ import annotations

from sqlalchemy import Select, and_, exists, false, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from crm_core.models import (
    Agent,
    AgentRole,
    CareTask,
    Conversation,
    Customer,
    Opportunity,
    agent_teams,
)


def is_admin(agent: Agent) -> bool:
    """Admins see and change everything."""
    return agent.role == AgentRole.ADMIN


def is_supervisor(agent: Agent) -> bool:
    """Supervisors (and admins) see their teams' work, reports and campaigns."""
    return agent.role in (AgentRole.ADMIN, AgentRole.SUPERVISOR)


def conversation_filter(agent: Agent, team_ids: set[int]) -> ColumnElement[bool]:
    """The SQL condition for the conversations ``agent`` may see."""
    if is_admin(agent):
        return true()
    teams = Conversation.team_id.in_(team_ids) if team_ids else false()
    unassigned_no_team = and_(Conversation.assignee_id.is_(None), Conversation.team_id.is_(None))
    if agent.role == AgentRole.SUPERVISOR:
        # Their teams' conversations, and those assigned to their teams' members even when
        # the conversation itself has no team (a sticky owner assignment).
        members = select(agent_teams.c.agent_id).where(agent_teams.c.team_id.in_(team_ids))
        of_members = Conversation.assignee_id.in_(members) if team_ids else false()
        return or_(Conversation.assignee_id == agent.id, teams, of_members, unassigned_no_team)
    team_queue = and_(Conversation.assignee_id.is_(None), teams)
    return or_(Conversation.assignee_id == agent.id, team_queue, unassigned_no_team)


def visible_conversations(query: Select, agent: Agent, team_ids: set[int]) -> Select:
    """``query`` (over ``Conversation``) narrowed to what ``agent`` may see."""
    return query.where(conversation_filter(agent, team_ids))


def can_see_conversation(
    agent: Agent, team_ids: set[int], conversation: Conversation,
    team_member_ids: set[int] | frozenset[int] = frozenset(),
) -> bool:
    """The same rule for one loaded conversation (``team_member_ids``: the agents of the
    supervisor's teams)."""
    if is_admin(agent):
        return True
    if conversation.assignee_id == agent.id:
        return True
    in_team = conversation.team_id is not None and conversation.team_id in team_ids
    unassigned = conversation.assignee_id is None
    if agent.role == AgentRole.SUPERVISOR:
        of_member = conversation.assignee_id is not None and (
            conversation.assignee_id in team_member_ids)
        return in_team or of_member or (unassigned and conversation.team_id is None)
    return unassigned and (in_team or conversation.team_id is None)


def can_see_customer(agent: Agent, customer: Customer, *, has_visible_conversation: bool) -> bool:
    """Admins and supervisors see every customer; an agent their own customers and those
    of conversations they may see (the form for live events, which know the customer's
    conversations; pages use ``customer_filter``, which also counts deals and care tasks)."""
    if is_supervisor(agent):
        return True
    return customer.owner_agent_id == agent.id or has_visible_conversation


def customer_filter(agent: Agent, team_ids: set[int]) -> ColumnElement[bool]:
    """The SQL condition over ``Customer`` for the customers ``agent`` may see: all for
    admins and supervisors; for an agent their own, and those of a conversation they may
    see, of an open deal they own or of an open care task given to them — a link from
    their sales or care-task list never ends in "forbidden"."""
    if is_supervisor(agent):
        return true()
    return or_(
        Customer.owner_agent_id == agent.id,
        exists().where(Conversation.customer_id == Customer.id,
                       conversation_filter(agent, team_ids)),
        exists().where(Opportunity.customer_id == Customer.id, Opportunity.owner_id == agent.id,
                       Opportunity.status == "open"),
        exists().where(CareTask.customer_id == Customer.id, CareTask.assignee_id == agent.id,
                       CareTask.status == "open"),
    )


def can_edit_settings(agent: Agent) -> bool:
    """Only admins change agents, teams, channels and system settings."""
    return is_admin(agent)
