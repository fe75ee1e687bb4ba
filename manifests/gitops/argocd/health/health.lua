-- Argo CD health of the pynchy.dev kinds: Group, Workspace, ScheduledTask and AgentRun.
--
-- The operator writes kstatus-style status: status.observedGeneration and the conditions
-- Accepted, Ready, Reconciling and Stalled; an AgentRun also has status.phase. Argo CD runs health
-- scripts with only Lua's base and table libraries (no string library), so this uses no others.
local hs = {}

local function find(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

-- The operator's message, else its CamelCase reason (of a condition, or an AgentRun's status).
local function explain(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local status = obj.status
if status == nil then
  return result("Progressing", "Waiting for the Pynchy operator to report status")
end

-- Conditions describe an older spec until the operator has seen the current generation.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return result("Progressing", "Waiting for the operator to observe generation " .. tostring(generation))
end

local conditions = status.conditions

-- Stalled: the operator cannot make progress without a change from a person.
local stalled = find(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return result("Degraded", explain(stalled))
end
local accepted = find(conditions, "Accepted")
if accepted ~= nil and accepted.status == "False" then
  return result("Degraded", explain(accepted))
end

if obj.kind == "AgentRun" then
  local phase = status.phase
  local message = explain(status)
  if phase == "Succeeded" then
    return result("Healthy", message)
  end
  if phase == "Failed" or phase == "TimedOut" then
    return result("Degraded", message)
  end
  -- Pending (queued behind a limit) and Running are both on their way, like a Job.
  return result("Progressing", message)
end

local ready = find(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  if ready.reason == "Suspended" then
    return result("Suspended", explain(ready))
  end
  return result("Healthy", explain(ready))
end
local reconciling = find(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return result("Progressing", explain(reconciling))
end
if ready ~= nil then
  return result("Progressing", explain(ready))
end
return result("Progressing", "Waiting for the Ready condition")
