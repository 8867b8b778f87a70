@echo off
rem uninstall.bat - remove the agent's service (sc.exe stop + delete) and its
rem scheduled task, if any, then stop the daemon and the agent (stop.bat).
rem It deletes no file.
rem
rem NOT TESTED: cannot run on the Linux build machine; the Windows binaries
rem are not built yet (docs/scripts.md).
setlocal EnableExtensions
cd /d "%~dp0" || exit /b 1
set "WORKDIR=%CD%"
call :service_name
if errorlevel 1 goto :stop
sc.exe query "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :task
sc.exe stop "%SERVICE%" >nul 2>&1
sc.exe delete "%SERVICE%"
:task
schtasks /query /tn "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :stop
schtasks /delete /tn "%SERVICE%" /f
:stop
call "%WORKDIR%\stop.bat"
endlocal
exit /b 0

rem service_name: SERVICE=devops_agent_<devops.agent.id>; errorlevel 1 if none.
:service_name
set "AGENT_ID="
if not exist .agent.properties goto :no_id
for /f "usebackq tokens=1,* delims== " %%a in (`findstr /b /c:"devops.agent.id" .agent.properties`) do (
	if "%%a"=="devops.agent.id" set "AGENT_ID=%%b"
)
if not defined AGENT_ID goto :no_id
set "SERVICE=devops_agent_%AGENT_ID%"
exit /b 0
:no_id
echo no devops.agent.id in .agent.properties
exit /b 1
