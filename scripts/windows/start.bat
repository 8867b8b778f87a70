@echo off
rem start.bat - start the agent's daemon: through its scheduled task
rem (devopsctl.vbs, desktop-session installs) when one exists, else through
rem its service (sc.exe start). Does nothing when the service already runs.
rem
rem NOT TESTED: cannot run on the Linux build machine; the Windows binaries
rem are not built yet (docs/scripts.md).
setlocal EnableExtensions
cd /d "%~dp0" || exit /b 1
set "WORKDIR=%CD%"
call :service_name || exit /b 1
if not exist logs mkdir logs
if not exist workspace mkdir workspace

schtasks /query /tn "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :service
echo starting %SERVICE% through its scheduled task
cscript //nologo "%WORKDIR%\devopsctl.vbs"
endlocal
exit /b %ERRORLEVEL%

:service
sc.exe query "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :no_service
sc.exe query "%SERVICE%" | find "RUNNING" >nul
if not errorlevel 1 goto :running
sc.exe start "%SERVICE%"
endlocal
exit /b %ERRORLEVEL%
:running
echo service %SERVICE% is already running
endlocal
exit /b 0
:no_service
echo service %SERVICE% is not installed: run install.bat
endlocal
exit /b 1

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
